// Uncached read: GETs spread over many record ids (MAX_IDS, default 10000), few repeats per id.
import { options as sharedOptions, loadIds, getRecord, positiveInteger } from './lib.js';

export const options = sharedOptions();

export function setup() {
  return { ids: loadIds(positiveInteger('MAX_IDS', 10000)) };
}

export default function (data) {
  // A stride through the id list, offset per VU: each VU walks the whole set before repeating.
  const index = (__VU * 7919 + __ITER) % data.ids.length;
  getRecord(data.ids[index]);
}
