// A compute flow with the real, unpatched ocean.js 3.x (@oceanprotocol/lib, pinned in package.json)
// against a runnerd daemon: what an ocean.js 3.x app does, with the library's own ProviderInstance
// calls. tests/test_oceanjs.py runs it and asserts on the JSON summary it prints on stdout; the
// library's own console output goes to stderr. docs/consumer-guide.md shows the part between the
// "example" markers (tests/test_oceanjs.py keeps the two in sync).
//
// Input (environment): RUNNERD_URL, CONSUMER_KEY (0x + 64 hex), DATASET_DID (a compute dataset
// that allows raw algorithms), ALGO_DID (a published algorithm the dataset trusts), RAW_IMAGE and
// RAW_TAG (an image the environment's rawAlgorithmImages lists), ENVIRONMENT (optional).
//
// No chain is needed for free compute. ocean.js 3.x asks its signer for the chain id before every
// signature (Provider.signProviderRequest), so the Wallet gets a JSON-RPC provider: a stand-in on
// 127.0.0.1 started below, which answers eth_chainId and nothing else (each method asked is
// reported in the summary). Nothing here talks to anything but 127.0.0.1.
'use strict'

const http = require('http')
const crypto = require('crypto')

// ocean.js 3.x logs through console.log/console.error; the summary alone goes to stdout.
const stdout = process.stdout.write.bind(process.stdout)
console.log = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')

const rpcMethods = []
function chainIdStandIn(chainId) {
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => { body += c })
    req.on('end', () => {
      let calls
      try { calls = JSON.parse(body) } catch { calls = {} }
      const answer = (call) => {
        rpcMethods.push(call.method)
        return call.method === 'eth_chainId'
          ? { jsonrpc: '2.0', id: call.id, result: '0x' + chainId.toString(16) }
          : { jsonrpc: '2.0', id: call.id, error: { code: -32601, message: 'only eth_chainId here' } }
      }
      res.setHeader('Content-Type', 'application/json')
      res.end(JSON.stringify(Array.isArray(calls) ? calls.map(answer) : answer(calls)))
    })
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

const randomTx = () => '0x' + crypto.randomBytes(32).toString('hex')
const short = (e) => String((e && e.message) || e).slice(0, 500)

async function main() {
  const { ethers } = require('ethers')
  const { ProviderInstance, downloadFile, sleep } = require('@oceanprotocol/lib')
  // the package's "exports" hide its package.json; read the installed one
  const libVersion = JSON.parse(require('fs').readFileSync(
    require('path').join(__dirname, 'node_modules/@oceanprotocol/lib/package.json'), 'utf8')).version
  const env = process.env
  const steps = {}
  const summary = { lib: libVersion, ethers: ethers.version, steps, rpcMethods }
  const step = async (name, fn) => {
    try {
      steps[name] = { ok: true, ...(await fn()) }
    } catch (e) {
      steps[name] = { ok: false, error: short(e) }
    }
    return steps[name]
  }
  const rpc = await chainIdStandIn(8996)
  try {
    // -- example: ocean.js 3.x against runnerd ----------------------------------------------
    const providerUri = env.RUNNERD_URL // runnerd's address, handed out like a Provider's
    const signer = new ethers.Wallet(env.CONSUMER_KEY,
      new ethers.providers.JsonRpcProvider(`http://127.0.0.1:${rpc.address().port}`))
    const consumer = await signer.getAddress()
    const dataset = { documentId: env.DATASET_DID, serviceId: 'compute', transferTxId: randomTx() }
    const algorithm = {
      meta: {
        rawcode: "print('hello from ocean.js', flush=True)\n" +
          "open('/data/outputs/out.txt', 'w').write('hello ocean.js 3')\n",
        container: { entrypoint: 'python3 $ALGO', image: env.RAW_IMAGE, tag: env.RAW_TAG, checksum: '' }
      }
    }

    await step('discovery', async () => ({ valid: await ProviderInstance.isValidProvider(providerUri) }))

    // 3.x types this as {chainId: envs[]}, but passes runnerd's flat list through as it is
    let envId = env.ENVIRONMENT
    await step('environments', async () => {
      const envs = await ProviderInstance.getComputeEnvironments(providerUri)
      const list = Array.isArray(envs) ? envs : Object.values(envs).flat()
      envId = envId || list.find((e) => e.priceMin === 0).id
      return { ids: list.map((e) => e.id), chosen: envId, found: list.some((e) => e.id === envId) }
    })

    let jobId
    await step('start', async () => {
      const jobs = await ProviderInstance.computeStart(providerUri, signer, envId, dataset, algorithm)
      if (!jobs) throw new Error('computeStart returned null (the daemon refused; ocean.js logs why)')
      const job = Array.isArray(jobs) ? jobs[0] : jobs
      jobId = job.jobId
      return { jobId, status: job.status }
    })

    let job
    await step('status', async () => {
      const seen = []
      for (let i = 0; i < 600; i++) { // unsigned reads by jobId, as every ocean.js sends them
        const jobs = await ProviderInstance.computeStatus(providerUri, consumer, jobId, dataset.transferTxId)
        job = Array.isArray(jobs) ? jobs[0] : jobs
        if (seen[seen.length - 1] !== job.status) seen.push(job.status)
        if (job.dateFinished || job.status >= 70 || job.status === 7) break
        await sleep(500)
      }
      return { status: job.status, statusText: job.statusText, seen, results: job.results }
    })

    const indexOf = (type, filename) =>
      job.results.find((r) => r.type === type && (!filename || r.filename === filename)).index

    await step('result', async () => {
      const url = await ProviderInstance.getComputeResultUrl(providerUri, signer, jobId, indexOf('output', 'out.txt'))
      const { data, filename } = await downloadFile(url)
      return { filename, text: Buffer.from(data).toString() }
    })

    await step('range', async () => { // a fresh signed URL: each one is good for one download
      const url = await ProviderInstance.getComputeResultUrl(providerUri, signer, jobId, indexOf('output', 'out.txt'))
      const res = await fetch(url, { headers: { Range: 'bytes=6-10' } })
      return { http: res.status, contentRange: res.headers.get('content-range'), text: await res.text() }
    })

    await step('algorithmLog', async () => {
      const url = await ProviderInstance.getComputeResultUrl(providerUri, signer, jobId, indexOf('algorithmLog'))
      return { text: Buffer.from((await downloadFile(url)).data).toString() }
    })

    // A second, long job, with an algorithm published in runnerd's catalog
    const longDataset = { ...dataset, transferTxId: randomTx() }
    const published = { documentId: env.ALGO_DID, serviceId: 'access', transferTxId: randomTx() }
    let longId
    await step('startLong', async () => {
      const jobs = await ProviderInstance.computeStart(providerUri, signer, envId, longDataset, published)
      if (!jobs) throw new Error('computeStart returned null (the daemon refused; ocean.js logs why)')
      longId = (Array.isArray(jobs) ? jobs[0] : jobs).jobId
      let status
      for (let i = 0; i < 600 && status !== 40; i++) {
        status = (await ProviderInstance.computeStatus(providerUri, consumer, longId))[0].status
        if (status !== 40) await sleep(500)
      }
      return { jobId: longId, status }
    })

    // ocean.js 3.x has no live-log method; an app builds the call from the library's own helpers
    // (endpoint lookup, nonce, signature), signed consumerAddress + jobId + nonce
    await step('liveLog', async () => {
      const endpoints = await ProviderInstance.getEndpoints(providerUri)
      const services = await ProviderInstance.getServiceEndpoints(providerUri, endpoints)
      const route = ProviderInstance.getEndpointURL(services, 'computeStreamableLogs')
      let text = ''
      for (let i = 0; i < 60 && !text.includes('looping'); i++) {
        const nonce = ((await ProviderInstance.getNonce(providerUri, consumer)) + 1).toString()
        const signature = await ProviderInstance.signProviderRequest(signer, consumer + longId + nonce)
        const res = await fetch(`${route.urlPath}?consumerAddress=${consumer}&jobId=${longId}` +
          `&nonce=${nonce}&signature=${signature}`, { method: route.method })
        text = await res.text()
        if (!res.ok) throw new Error(`${res.status} ${text}`)
        if (!text.includes('looping')) await sleep(500)
      }
      return { text }
    })

    await step('stop', async () => {
      const jobs = await ProviderInstance.computeStop(env.DATASET_DID, consumer, longId, providerUri, signer,
        longDataset.transferTxId)
      const after = (await ProviderInstance.computeStatus(providerUri, consumer, longId))[0]
      return { answer: jobs.map((j) => [j.jobId, j.status, j.statusText]), after: after.status }
    })

    await step('delete', async () => {
      const jobs = await ProviderInstance.computeDelete(env.DATASET_DID, signer, jobId, providerUri)
      let after
      try {
        after = await ProviderInstance.computeStatus(providerUri, consumer, jobId)
      } catch (e) {
        after = JSON.parse(e.message) // ocean.js throws the daemon's answer
      }
      const again = await ProviderInstance.computeDelete(env.DATASET_DID, signer, longId, providerUri)
      return { answer: jobs.map((j) => [j.jobId, j.status]), after, second: again.map((j) => [j.jobId, j.status]) }
    })
    // -- end of example -----------------------------------------------------------------------
  } finally {
    rpc.close()
  }
  summary.ok = Object.values(steps).every((s) => s.ok)
  return summary
}

main().then(
  (summary) => { stdout(JSON.stringify(summary) + '\n'); process.exitCode = summary.ok ? 0 : 1 },
  (e) => { stdout(JSON.stringify({ ok: false, error: short(e) }) + '\n'); process.exitCode = 2 }
)
