// Reference encoder for the tokenizer.json tests: encodes each string of a JSON array with
// @lenml/tokenizers (transformers.js's tokenizers), no bos/eos added, and writes the ids as JSON.
// usage: node hf_reference.cjs MODEL_DIR INPUT.json OUTPUT.json   (run from the npm folder)
const fs = require('fs');
const path = require('path');
const { TokenizerLoader } = require(path.join(process.cwd(), 'node_modules/@lenml/tokenizers'));
const [dir, input, output] = process.argv.slice(2);
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')),
  tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')),
});
const texts = JSON.parse(fs.readFileSync(input, 'utf8'));
const ids = texts.map((t) => Array.from(tokenizer.encode(t, { add_special_tokens: false })));
fs.writeFileSync(output, JSON.stringify(ids));
