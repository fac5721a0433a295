// X's official twitter-text library as a judge for the Python tests (never shipped).
//
// Reads a JSON array of strings on stdin and writes a JSON array with, per string,
// what the official library sees: the weighted length, each kind of entity, the
// entities after overlap removal (what X links), and the emoji it counts as one.
// Indices are code point offsets, as Python's str uses.
'use strict';
const twttr = require('twitter-text');
const twemoji = require('twemoji-parser');

function codePointIndex(text) {
  // UTF-16 offset -> code point offset, for every offset 0..text.length.
  const map = new Array(text.length + 1);
  let cp = 0;
  for (let i = 0; i <= text.length; i++) {
    map[i] = cp;
    const c = text.charCodeAt(i);
    const isHigh = c >= 0xd800 && c <= 0xdbff;
    const next = text.charCodeAt(i + 1);
    if (isHigh && next >= 0xdc00 && next <= 0xdfff) {
      map[i + 1] = cp;
      i++;
    }
    cp++;
  }
  return map;
}

function judge(text) {
  const at = codePointIndex(text);
  const span = (e) => [at[e.indices[0]], at[e.indices[1]]];
  const kind = (e) => (e.url !== undefined ? 'url' : e.hashtag !== undefined ? 'hashtag'
    : e.cashtag !== undefined ? 'cashtag' : 'mention');
  const parsed = twttr.parseTweet(text);
  return {
    weightedLength: parsed.weightedLength,
    valid: parsed.valid,
    urls: twttr.extractUrlsWithIndices(text).map((e) => [...span(e), e.url]),
    mentions: twttr.extractMentionsOrListsWithIndices(text).map((e) => [...span(e), e.screenName + e.listSlug]),
    hashtags: twttr.extractHashtagsWithIndices(text, { checkUrlOverlap: false }).map((e) => [...span(e), e.hashtag]),
    cashtags: twttr.extractCashtagsWithIndices(text).map((e) => [...span(e), e.cashtag]),
    entities: twttr.extractEntitiesWithIndices(text).map((e) => [kind(e), ...span(e)]),
    emoji: twemoji.parse(text).map((e) => span(e)),
  };
}

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  process.stdout.write(JSON.stringify(JSON.parse(input).map(judge)));
});
