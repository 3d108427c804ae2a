// Loads a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU build) and writes, as JSON, the
// next-token probabilities after each prefix of a token sequence (temperature 1, no truncation)
// and llama.cpp's own tokenization of some texts (no bos added).
// usage: node llama_cpp_eval.mjs NPM_DIR MODEL.gguf INPUT.json OUTPUT.json
//   INPUT: {"tokens": [ids], "texts": [strings]}   OUTPUT: {"probs": [[p per id]], "tokenized": [[ids]]}
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";
const [npmDir, file, input, output] = process.argv.slice(2);
const { getLlama } = await import(pathToFileURL(path.join(npmDir, "node_modules/node-llama-cpp/dist/index.js")).href);
const { tokens, texts } = JSON.parse(fs.readFileSync(input, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: file });
// An f32 KV cache (llama.cpp's default is f16), so f32 weights are compared at f32 precision.
const context = await model.createContext({
  contextSize: Math.max(32, tokens.length + 1), flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const sequence = context.getSequence();
const sampling = { temperature: 1, topK: 0, topP: 1, minP: 0 };
const results = await sequence.controlledEvaluate(
  tokens.map((t) => [t, { generateNext: { probabilities: true, options: sampling } }]));
const vocab = model.fileInsights.tokens?.length ?? model.tokens?.length;
const probs = results.map((r) => {
  const p = [];
  for (const [id, value] of r.next.probabilities) p[id] = value;
  return Array.from(p, (v) => v ?? 0);
});
const tokenized = texts.map((t) => Array.from(model.tokenize(t)));
fs.writeFileSync(output, JSON.stringify({ probs, tokenized, vocab }));
await context.dispose();
await model.dispose();
