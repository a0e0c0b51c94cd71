// Sends the six Segment call types through a real Node tracking SDK, flushes, and prints
// (as one JSON object on stdout) what was sent, including the SDK-generated messageIds.
//
//   node send_node.mjs <segment-node|rudder-node> <host> <writeKey> <gzip:on|off> <runId>
//
// Ids are derived from the arguments exactly as test_sdks.py derives them:
//   userId = u-<sdk>-gzip<on|off>-<runId>, previousId = prev-…, groupId = g-…
//
// gzip:
//   * @rudderstack/rudder-sdk-node: option `gzip` (default true); `gzip: false` turns it off.
//   * @segment/analytics-node has no compression option and always sends plain JSON. For
//     gzip=on it is given a custom `httpClient` (its public hook for the HTTP transport) that
//     gzips the body it is handed and adds `Content-Encoding: gzip`; the events themselves are
//     still built and batched by the unmodified SDK.
import { gzipSync, gunzipSync } from 'node:zlib'
import { Analytics } from '@segment/analytics-node'
import RudderAnalytics from '@rudderstack/rudder-sdk-node'

const [sdk, host, writeKey, gzipArg, runId] = process.argv.slice(2)
if (!sdk || !host || !writeKey || !['on', 'off'].includes(gzipArg) || !runId) {
  console.error('usage: node send_node.mjs <segment-node|rudder-node> <host> <writeKey> <on|off> <runId>')
  process.exit(2)
}
const gzip = gzipArg === 'on'
const tag = `${sdk}-gzip${gzipArg}-${runId}`
const ids = { userId: `u-${tag}`, previousId: `prev-${tag}`, groupId: `g-${tag}` }

// The six calls, in SDK-neutral form (both SDKs take the same message objects).
const calls = [
  ['identify', { userId: ids.userId, traits: { email: `${ids.userId}@example.com`, name: 'Ayşe Yılmaz', plan: 'pro' } }],
  ['track', { userId: ids.userId, event: 'Order Completed', properties: { revenue: 349.9, currency: 'TRY', orderId: `o-${tag}` } }],
  ['page', { userId: ids.userId, name: 'Pricing', properties: { path: '/pricing', title: 'Pricing' } }],
  ['screen', { userId: ids.userId, name: 'Home Screen', properties: { variant: 'a' } }],
  ['group', { userId: ids.userId, groupId: ids.groupId, traits: { name: 'Acme', plan: 'enterprise' } }],
  ['alias', { userId: ids.userId, previousId: ids.previousId }],
]

const errors = []
const sent = [] // { type, messageId }
const TIMEOUT_MS = 30000

function withTimeout(promise, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS)
    }),
  ]).finally(() => clearTimeout(timer))
}

async function runSegment() {
  const settings = { writeKey, host, flushInterval: 500, maxRetries: 3, httpRequestTimeout: 10000 }
  if (gzip) {
    settings.httpClient = (url, init) =>
      fetch(url, {
        ...init,
        headers: { ...init.headers, 'Content-Encoding': 'gzip' },
        body: gzipSync(Buffer.from(init.body, 'utf8')),
      })
  }
  const analytics = new Analytics(settings)
  analytics.on('error', (e) => errors.push(`error event: ${e?.code ?? ''} ${String(e?.reason ?? e)}`))
  const delivered = calls.map(([type, msg]) =>
    new Promise((resolve) => {
      analytics[type](msg, (err, ctx) => {
        if (err) errors.push(`${type}: ${String(err)}`)
        sent.push({ type, messageId: ctx?.event?.messageId ?? null })
        resolve()
      })
    }))
  await withTimeout(analytics.closeAndFlush({ timeout: TIMEOUT_MS }), 'closeAndFlush')
  await withTimeout(Promise.all(delivered), 'delivery callbacks')
}

async function runRudder() {
  const options = {
    dataPlaneUrl: host,
    gzip, // default is true
    flushInterval: 500,
    retryCount: 3,
    timeout: 10000,
    logLevel: 'error',
    // Without an errorHandler a failed request made by the SDK's own automatic flush is an
    // unhandled promise rejection, which ends the process.
    errorHandler: (err) => errors.push(`errorHandler: ${String(err?.message ?? err)}`),
  }
  const analytics = new RudderAnalytics(writeKey, options)
  // Callbacks get (err, data) where data is the request body that carried the message: the
  // {batch, sentAt, timestamp} object, or the gzipped Buffer when gzip is on.
  const byId = new Map()
  const delivered = calls.map(([type, msg]) =>
    new Promise((resolve) => {
      analytics[type](msg, (err, data) => {
        if (err) errors.push(`${type}: ${String(err?.message ?? err)}`)
        try {
          const body = Buffer.isBuffer(data) ? JSON.parse(gunzipSync(data).toString('utf8')) : data
          for (const m of body?.batch ?? []) byId.set(m.messageId, m.type)
        } catch (e) {
          errors.push(`cannot read callback data: ${String(e)}`)
        }
        resolve()
      })
    }))
  // The first call is sent at once; the rest wait for flushAt/flushInterval, so flush until
  // the in-memory queue is empty.
  for (let i = 0; i < 10 && (analytics.queue.length > 0 || i === 0); i++) {
    await withTimeout(analytics.flush(), 'flush')
  }
  await withTimeout(Promise.all(delivered), 'delivery callbacks')
  for (const [messageId, type] of byId) sent.push({ type, messageId })
}

try {
  if (sdk === 'segment-node') await runSegment()
  else if (sdk === 'rudder-node') await runRudder()
  else throw new Error(`unknown sdk ${sdk}`)
} catch (e) {
  errors.push(`exception: ${String(e?.stack ?? e)}`)
}

process.stdout.write(JSON.stringify({ sdk, gzip: gzipArg, runId, ...ids, calls, sent, errors }) + '\n')
process.exit(0)
