// node's Intl.Segmenter -- what the Bluesky PDS counts a post's graphemes with -- as a
// judge for the Python tests (never shipped). No npm packages: ICU comes with node.
//
// stdin {"texts": [s, ...]}                      -> stdout {"counts": [n, ...]}
// stdin {"around": [[prefix, suffix, [cp, ...]]]} -> stdout {"around": [[n, ...], ...]}
//   (the count of prefix + String.fromCodePoint(cp) + suffix, for each code point)
'use strict';
const segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

function count(text) {
  let n = 0;
  for (const _ of segmenter.segment(text)) n++;
  return n;
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const request = JSON.parse(input);
  const answer = { unicode: process.versions.unicode, icu: process.versions.icu };
  if (request.texts) answer.counts = request.texts.map(count);
  if (request.around) {
    answer.around = request.around.map(([prefix, suffix, codes]) =>
      codes.map((cp) => count(prefix + String.fromCodePoint(cp) + suffix)));
  }
  process.stdout.write(JSON.stringify(answer));
});
