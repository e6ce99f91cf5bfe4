// Shared by every scenario: configuration from the environment, thresholds, the id set, requests.
import http from 'k6/http';
import { check, fail } from 'k6';
import exec from 'k6/execution';

// Load tests run against a local stack only: anything but 127.0.0.1 is refused before a request.
const LOCAL_URL = /^http:\/\/127\.0\.0\.1(:\d{1,5})?$/;
const PAGE_LIMIT = 500;

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
if (!LOCAL_URL.test(BASE_URL)) {
  fail(`BASE_URL must be http://127.0.0.1[:port], got ${BASE_URL}`);
}
const API_KEY = __ENV.API_KEY || fail('API_KEY is not set');
const HEADERS = { Authorization: `Bearer ${API_KEY}` };
// open() only works while the script loads, so a given ids file is read here, once per VU.
const IDS_FILE_TEXT = __ENV.IDS_FILE ? open(__ENV.IDS_FILE) : null;

export function positiveInteger(name, fallback) {
  const value = parseInt(__ENV[name] || `${fallback}`, 10);
  if (!(value > 0)) fail(`${name} must be a positive integer, got ${__ENV[name]}`);
  return value;
}

const WARMUP_S = parseInt(__ENV.WARMUP_S || '0', 10);
if (!(WARMUP_S >= 0)) fail(`WARMUP_S must be a whole number of seconds, got ${__ENV.WARMUP_S}`);

/**
 * k6 options every scenario shares: the thresholds (p99 < 100 ms, errors < 0.01 %) and the load:
 * VUS virtual users looping for DURATION (a closed loop: the rate is whatever they reach), or, with
 * RATE set, RATE iterations a second on a fixed schedule for DURATION (k6's constant-arrival-rate,
 * with up to VUS users in flight): a figure at a stated rate. Iterations k6 could not start on time
 * (every user busy) count as `dropped_iterations`; `sophia loadtest` fails the run on any of them.
 * With RATE, the schedule's first WARMUP_S seconds warm the API's caches and pools and k6's own
 * users and connections (the same users go on): their requests are tagged `phase:warmup`, the
 * latency threshold judges `phase:measured` only, and a failed request fails the run in either.
 */
export function options() {
  const shared = {
    thresholds: {
      'http_req_duration{phase:measured}': ['p(99)<100'],
      http_req_failed: ['rate<0.0001'],
    },
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(99)'],
    setupTimeout: '60s',
    // The checks read statuses only; a body k6 need not turn into a string costs it no CPU (the
    // setup's listing asks for its body itself).
    discardResponseBodies: true,
  };
  const vus = positiveInteger('VUS', 8);
  const duration = __ENV.DURATION || '20s';
  if (!__ENV.RATE) return { ...shared, vus, duration };
  const seconds = /^(\d+)s$/.exec(duration);
  if (WARMUP_S > 0 && !seconds) fail(`with WARMUP_S, DURATION must be in seconds (like 30s), got ${duration}`);
  const fixedRate = {
    executor: 'constant-arrival-rate',
    rate: positiveInteger('RATE', 1),
    timeUnit: '1s',
    duration: WARMUP_S > 0 ? `${WARMUP_S + parseInt(seconds[1], 10)}s` : duration,
    preAllocatedVUs: vus,
    maxVUs: vus,
  };
  return { ...shared, scenarios: { fixed_rate: fixedRate } };
}

/** `warmup` during a fixed-rate run's first WARMUP_S seconds, then (and always otherwise) `measured`. */
function phase() {
  if (WARMUP_S === 0 || !exec.scenario.startTime) return 'measured';
  return Date.now() - exec.scenario.startTime < WARMUP_S * 1000 ? 'warmup' : 'measured';
}

function parseIdsFile(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) return JSON.parse(trimmed);
  return trimmed.split(/\s+/).filter((line) => line.length > 0);
}

/** Up to `count` record ids: from IDS_FILE if given, else paged from GET /api/v1/records. */
export function loadIds(count) {
  if (IDS_FILE_TEXT !== null) return parseIdsFile(IDS_FILE_TEXT).slice(0, count);
  const ids = [];
  let cursor = null;
  while (ids.length < count) {
    const query = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
    const response = http.get(`${BASE_URL}/api/v1/records?limit=${PAGE_LIMIT}${query}`, {
      headers: HEADERS,
      responseType: 'text',
      tags: { name: 'GET /api/v1/records (setup)' },
    });
    if (response.status !== 200) fail(`listing records answered ${response.status}: ${response.body}`);
    const page = response.json();
    for (const item of page.items) ids.push(item.id);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  if (ids.length === 0) fail('the catalog is empty: seed it first (sophia seed)');
  return ids.slice(0, count);
}

export function pick(ids) {
  return ids[Math.floor(Math.random() * ids.length)];
}

export function getRecord(id) {
  const response = http.get(`${BASE_URL}/api/v1/records/${id}`, {
    headers: HEADERS,
    tags: { name: 'GET /api/v1/records/{id}', phase: phase() },
  });
  check(response, { 'read 200': (r) => r.status === 200 });
  return response;
}

/** Replace one of a VU's own records (its keys never collide with another VU's, so no 412s). */
export function putRecord(slot) {
  const externalId = `vu${__VU}-${slot}`;
  const body = JSON.stringify({
    data: { amount: `${Math.floor(Math.random() * 100000)}`, stage: 'load-test', iteration: __ITER },
  });
  const response = http.put(`${BASE_URL}/api/v1/records/loadtest/probe/${externalId}`, body, {
    headers: { ...HEADERS, 'Content-Type': 'application/json' },
    tags: { name: 'PUT /api/v1/records/{source_system}/{kind}/{external_id}', phase: phase() },
  });
  check(response, { 'write 200/201': (r) => r.status === 200 || r.status === 201 });
  return response;
}
