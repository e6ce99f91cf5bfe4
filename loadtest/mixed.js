// Mixed: 95 % reads spread over many ids, 5 % PUT writes (WRITE_PERCENT) of a VU's own records.
import { options as sharedOptions, loadIds, getRecord, putRecord, pick, positiveInteger } from './lib.js';

export const options = sharedOptions();
const WRITE_PERCENT = parseFloat(__ENV.WRITE_PERCENT || '5');
const WRITE_SLOTS = 50;

export function setup() {
  return { ids: loadIds(positiveInteger('MAX_IDS', 10000)) };
}

export default function (data) {
  if (Math.random() * 100 < WRITE_PERCENT) {
    putRecord(__ITER % WRITE_SLOTS);
  } else {
    getRecord(pick(data.ids));
  }
}
