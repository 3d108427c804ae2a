// Reads a GGUF file with @huggingface/gguf (an independent parser) and writes what it found as
// JSON: every metadata key with its value and GGUF value type, the data section's offset and each
// tensor's name, shape (innermost first, as the file lists it), ggml type and offset.
// usage: node gguf_dump.cjs NPM_DIR FILE.gguf OUTPUT.json
const fs = require('fs');
const path = require('path');
const [npmDir, file, output] = process.argv.slice(2);
const { gguf } = require(path.join(npmDir, 'node_modules/@huggingface/gguf'));
const plain = (v) => {
  if (typeof v === 'bigint') {
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`value ${v} does not fit a JSON number`);
    return Number(v);
  }
  if (Array.isArray(v)) return v.map(plain);
  return v;
};
gguf(path.resolve(file), { allowLocalFile: true, typedMetadata: true }).then((r) => {
  const metadata = {};
  for (const [key, entry] of Object.entries(r.typedMetadata)) {
    metadata[key] = { value: plain(entry.value), type: entry.type };
    if (entry.subType !== undefined) metadata[key].subType = entry.subType;
  }
  const tensors = r.tensorInfos.map((t) => ({
    name: t.name, shape: t.shape.map(plain), dtype: t.dtype, offset: plain(t.offset),
  }));
  fs.writeFileSync(output, JSON.stringify({ metadata, tensorDataOffset: plain(r.tensorDataOffset), tensors }));
}).catch((e) => { console.error(`gguf_dump: ${e.message}`); process.exit(1); });
