// A compute flow with the real, unpatched ocean.js 8.x (@oceanprotocol/lib, pinned in package.json)
// against runnerd's ocean-node dialect: what an ocean.js 8 app does, with the library's own
// ProviderInstance and Aquarius calls. tests/test_oceanjs8.py runs it and asserts on the JSON
// summary it prints on stdout; the library's own console output goes to stderr.
// docs/consumer-guide.md shows the part between the "example" markers (tests/test_oceanjs8.py keeps
// the two in sync).
//
// Input (environment): NODE_URL (runnerd's URL + /c2d/v2), CONSUMER_KEY (0x + 64 hex), VIEWER_KEY
// (another key), DATASET_DID (a compute dataset that allows raw algorithms and trusts ALGO_DID),
// ALGO_DID (a published algorithm), RAW_IMAGE and RAW_TAG (an image the environment's
// rawAlgorithmImages lists).
//
// No chain is needed: ocean.js 8 signs with the wallet alone and free compute pays nothing.
// Nothing here talks to anything but NODE_URL.
'use strict'

const stdout = process.stdout.write.bind(process.stdout)
console.log = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')

const short = (e) => String((e && e.message) || e).slice(0, 600)

async function main() {
  const { ethers } = require('ethers')
  const { ProviderInstance, Aquarius, sleep } = require('@oceanprotocol/lib')
  const libVersion = JSON.parse(require('fs').readFileSync(
    require('path').join(__dirname, 'node_modules/@oceanprotocol/lib/package.json'), 'utf8')).version
  const env = process.env
  const steps = {}
  const summary = { lib: libVersion, ethers: ethers.version, steps }
  const step = async (name, fn) => {
    try {
      steps[name] = { ok: true, ...(await fn()) }
    } catch (e) {
      steps[name] = { ok: false, error: short(e) }
    }
    return steps[name]
  }
  const text = async (stream) => { // ocean.js 8 hands back byte streams as async iterables
    const chunks = []
    for await (const c of stream) chunks.push(Buffer.from(c))
    return Buffer.concat(chunks)
  }
  const viewerSigner = new ethers.Wallet(env.VIEWER_KEY)

  // -- example: ocean.js 8.x against runnerd's ocean-node dialect ------------------------------
  const nodeUrl = env.NODE_URL // runnerd's URL + '/c2d/v2', handed out like an ocean-node's
  const signer = new ethers.Wallet(env.CONSUMER_KEY) // no chain is needed for free compute
  const consumer = await signer.getAddress()
  const datasets = [{ documentId: env.DATASET_DID, serviceId: 'compute' }]
  const algorithm = {
    meta: {
      rawcode: "print('hello from ocean.js 8', flush=True)\n" +
        "open('/data/outputs/out.txt', 'w').write('hello ocean.js 8')\n",
      container: { entrypoint: 'python3 $ALGO', image: env.RAW_IMAGE, tag: env.RAW_TAG, checksum: '' }
    }
  }

  await step('discovery', async () => ({ valid: await ProviderInstance.isValidProvider(nodeUrl) }))

  await step('ddo', async () => { // what ocean-cli reads before a start: the catalog's DDO
    const asset = await new Aquarius(nodeUrl).resolve(env.DATASET_DID)
    return { id: asset.id, endpoint: asset.services[0].serviceEndpoint, files: asset.services[0].files }
  })

  let envId
  await step('environments', async () => {
    const envs = await ProviderInstance.getComputeEnvironments(nodeUrl)
    const free = envs.find((e) => e.free) // apps pick the free environment by its `free` block
    envId = free.id
    return { ids: envs.map((e) => e.id), chosen: envId, resources: free.resources.map((r) => r.id) }
  })

  let jobId
  await step('start', async () => {
    const jobs = await ProviderInstance.freeComputeStart(nodeUrl, signer, envId, datasets, algorithm,
      [{ id: 'cpu', amount: 1 }], { name: 'ocean.js 8 check' }, [await viewerSigner.getAddress()])
    const job = Array.isArray(jobs) ? jobs[0] : jobs
    jobId = job.jobId
    return { jobId, status: job.status }
  })

  let job
  await step('status', async () => {
    const seen = []
    for (let i = 0; i < 600; i++) { // unsigned reads by jobId, as ocean.js sends them
      const jobs = await ProviderInstance.computeStatus(nodeUrl, signer, jobId)
      job = Array.isArray(jobs) ? jobs[0] : jobs
      if (seen[seen.length - 1] !== job.status) seen.push(job.status)
      if (job.status === 70 || job.status === 71) break // ocean-node's two "done" codes
      await sleep(500)
    }
    return { status: job.status, statusText: job.statusText, seen, results: job.results,
      terminationDetails: job.terminationDetails, metadata: job.metadata }
  })

  const outputs = () => job.results.find((r) => r.type === 'output') // one outputs.tar

  await step('result', async () => {
    const tar = await text(await ProviderInstance.getComputeResult(nodeUrl, signer, jobId, outputs().index))
    return { filename: outputs().filename, size: tar.length, tar: tar.toString('base64') }
  })

  await step('range', async () => { // resume a download at an offset: Range: bytes=N-
    const offset = 512 // past the tar's first header
    const rest = await text(await ProviderInstance.getComputeResult(nodeUrl, signer, jobId, outputs().index,
      offset))
    return { offset, size: rest.length, head: rest.subarray(0, 32).toString('base64') }
  })

  await step('algorithmLog', async () => {
    const log = job.results.find((r) => r.type === 'algorithmLog')
    const url = await ProviderInstance.getComputeResultUrl(nodeUrl, signer, jobId, log.index)
    return { text: await (await fetch(url)).text() }
  })

  // an auth token: later calls need no signature (and no nonce)
  let token
  await step('token', async () => {
    token = await ProviderInstance.generateAuthToken(signer, nodeUrl)
    const jobs = await ProviderInstance.computeStatus(nodeUrl, token) // all of this address's jobs
    return { listed: jobs.map((j) => j.jobId) }
  })

  // a second, long job, with an algorithm published in runnerd's catalog, started with the token
  let longId
  await step('startLong', async () => {
    const published = { documentId: env.ALGO_DID, serviceId: 'access' }
    const jobs = await ProviderInstance.freeComputeStart(nodeUrl, token, envId, datasets, published)
    longId = (Array.isArray(jobs) ? jobs[0] : jobs).jobId
    let status
    for (let i = 0; i < 600 && status !== 40; i++) {
      status = (await ProviderInstance.computeStatus(nodeUrl, signer, longId))[0].status
      if (status !== 40) await sleep(500)
    }
    return { jobId: longId, status }
  })

  await step('liveLog', async () => { // the log while the job runs, as a stream
    const stream = await ProviderInstance.computeStreamableLogs(nodeUrl, signer, longId)
    let seen = ''
    for await (const chunk of stream) {
      seen += Buffer.from(chunk).toString()
      if (seen.includes('looping')) break
    }
    return { text: seen }
  })

  await step('stop', async () => {
    const jobs = await ProviderInstance.computeStop(longId, nodeUrl, signer)
    const after = (await ProviderInstance.computeStatus(nodeUrl, signer, longId))[0]
    return { answer: jobs.map((j) => [j.jobId, j.status, j.stopRequested]), after: after.runnerdStatus }
  })

  await step('invalidate', async () => {
    const answer = await ProviderInstance.invalidateAuthToken(signer, token, nodeUrl)
    let after
    try {
      after = await ProviderInstance.computeStatus(nodeUrl, token)
    } catch (e) {
      after = JSON.parse(e.message) // ocean.js throws the node's answer
    }
    return { answer, after }
  })
  // -- end of example -------------------------------------------------------------------------

  // the viewer named in additionalViewers may read the first job, but not stop it
  await step('viewer', async () => {
    const viewer = await viewerSigner.getAddress()
    const jobs = await ProviderInstance.computeStatus(nodeUrl, viewerSigner, jobId)
    const tar = await text(await ProviderInstance.getComputeResult(nodeUrl, viewerSigner, jobId, outputs().index))
    let stop
    try {
      stop = await ProviderInstance.computeStop(jobId, nodeUrl, viewerSigner)
    } catch (e) {
      stop = JSON.parse(e.message)
    }
    return { status: jobs[0].status, size: tar.length, stop }
  })

  await step('paid', async () => { // the paid start (escrow on chain) is refused with a pointer
    try {
      await ProviderInstance.computeStart(nodeUrl, signer, env.PAID_ENV, datasets, algorithm, 60, '0x' +
        '0'.repeat(40), [], 8996)
      return { refused: false }
    } catch (e) {
      return { refused: true, answer: JSON.parse(e.message) }
    }
  })

  summary.ok = Object.values(steps).every((s) => s.ok)
  return summary
}

main().then(
  (summary) => { stdout(JSON.stringify(summary) + '\n'); process.exitCode = summary.ok ? 0 : 1 },
  (e) => { stdout(JSON.stringify({ ok: false, error: short(e) }) + '\n'); process.exitCode = 2 }
)
