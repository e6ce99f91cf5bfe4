// Cached read: GETs of a small hot set of record ids, over and over (HOT_SET ids, default 16).
import { options as sharedOptions, loadIds, getRecord, pick, positiveInteger } from './lib.js';

export const options = sharedOptions();

export function setup() {
  return { ids: loadIds(positiveInteger('HOT_SET', 16)) };
}

export default function (data) {
  getRecord(pick(data.ids));
}
