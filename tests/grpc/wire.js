// wire.js - wire tests of sbxfs-server --api cwsandbox with an independent
// gRPC client: @grpc/grpc-js + @grpc/proto-loader loading the project's
// api/cwsandbox/*.proto.  Run by grpc_test.sh inside tools/with-server.sh
// (SBXFS_SERVER_URL, CWSANDBOX_API_KEY in the environment).  Prints one
// line per test and "N passed, N failed" last.
'use strict';
const path = require('path');
const crypto = require('crypto');
const { spawn } = require('child_process');
const modules = process.env.GRPC_TEST_MODULES;
const grpc = require(path.join(modules, '@grpc/grpc-js'));
const loader = require(path.join(modules, '@grpc/proto-loader'));

const protoDir = path.join(__dirname, '..', '..', 'api', 'cwsandbox');
const opts = { keepCase: true, longs: String, enums: String, defaults: true,
	       oneofs: true };
const pkg = grpc.loadPackageDefinition(
	loader.loadSync(path.join(protoDir, 'sandbox.proto'), opts))
	.coreweave.sandbox.v1;
/* protobufjs (proto-loader's own dependency) for raw messages */
const protobuf = require(path.join(modules, 'protobufjs'));
const rpcRoot = protobuf.loadSync(path.join(protoDir, 'rpc_status.proto'));
const StatusT = rpcRoot.lookupType('google.rpc.Status');
const ErrorInfoT = rpcRoot.lookupType('google.rpc.ErrorInfo');
const sbRoot = protobuf.loadSync(path.join(protoDir, 'sandbox.proto'));
const GetReqT = sbRoot.lookupType('coreweave.sandbox.v1.GetSandboxRequest');
const SandboxT = sbRoot.lookupType('coreweave.sandbox.v1.Sandbox');

const target = process.env.SBXFS_SERVER_URL.replace(/^http:\/\//, '');
const key = process.env.CWSANDBOX_API_KEY;
const MAXMSG = 100 * 1024 * 1024;
const chOpts = { 'grpc.max_receive_message_length': MAXMSG,
		 'grpc.max_send_message_length': MAXMSG };
const client = new pkg.SandboxService(target,
	grpc.credentials.createInsecure(), chOpts);

function md(k) {
	const m = new grpc.Metadata();
	if (k !== null)
		m.add('authorization', 'Bearer ' + (k === undefined ? key : k));
	return m;
}

function call(method, req, { secs = 60, k, cl = client } = {}) {
	return new Promise((resolve, reject) => {
		cl[method](req, md(k), { deadline: Date.now() + secs * 1000 },
			(e, r) => e ? reject(e) : resolve(r));
	});
}

async function fails(p) {
	try {
		await p;
	} catch (e) {
		return e;
	}
	throw new Error('call succeeded, expected an error');
}

function errorInfo(e) {
	const v = e.metadata.get('grpc-status-details-bin');
	if (!v.length)
		return null;
	const st = StatusT.decode(v[0]);
	const any = st.details.find(d =>
		d.typeUrl === 'type.googleapis.com/google.rpc.ErrorInfo');
	return any ? ErrorInfoT.decode(any.value) : null;
}

function eq(a, b, what) {
	if (a !== b)
		throw new Error(`${what}: got ${JSON.stringify(a)}, ` +
				`want ${JSON.stringify(b)}`);
}

function ok(c, what) {
	if (!c)
		throw new Error(what);
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function waitState(id, want, secs = 60) {
	const end = Date.now() + secs * 1000;
	let s;
	while (Date.now() < end) {
		s = await call('GetSandbox', { sandbox_id: id });
		if (s.status.state === want)
			return s;
		if (s.status.state !== 'STATE_CREATING')
			throw new Error('state ' + s.status.state + ': ' +
					s.status.state_reason);
		await sleep(100);
	}
	throw new Error('still ' + (s && s.status.state));
}

async function create(tags, extra = {}) {
	const s = await call('CreateSandbox', { request_id: crypto.randomUUID(),
		sandbox: { spec: Object.assign({ containers: [{ name: 'main',
			image: 'python:3.11' }], tags }, extra) } });
	eq(s.status.state, 'STATE_CREATING', 'create answers at once');
	return waitState(s.sandbox_id, 'STATE_RUNNING');
}

// StreamExec driven as the SDKs do: init, wait for ready, stdin chunks,
// close, half-close.  Resolves {ready_ms, out, err, exit, status, msgs}.
function streamExec(id, command, { stdin = null, secs = 60, onCall,
				   chunk = 65536 } = {}) {
	return new Promise(resolve => {
		const t0 = Date.now();
		const c = client.StreamExec(md(), { deadline: Date.now() +
						    secs * 1000 });
		const r = { out: [], err: [], exit: null, error: null,
			    msgs: [], ready_ms: -1 };
		let outBytes = 0;
		c.on('data', m => {
			r.msgs.push(m.message);
			if (m.ready) {
				r.ready_ms = Date.now() - t0;
				if (stdin !== null)
					feed();
			} else if (m.output) {
				outBytes += m.output.data.length;
				if (outBytes < 64 << 20)
					(m.output.stream === 'STREAM_STDERR' ?
					 r.err : r.out).push(m.output.data);
				r.outBytes = outBytes;
			} else if (m.exit) {
				r.exit = m.exit.exit_code;
			} else if (m.error) {
				r.error = m.error;
			}
		});
		c.on('error', () => {});
		c.on('status', st => {
			r.status = st;
			r.out = Buffer.concat(r.out).toString('latin1');
			r.err = Buffer.concat(r.err).toString();
			resolve(r);
		});
		async function feed() {
			const buf = typeof stdin === 'function' ? null : stdin;
			if (typeof stdin === 'function') {
				for (let d; (d = stdin()) !== null;)
					if (!c.write({ stdin: d }))
						await new Promise(res =>
							c.once('drain', res));
			} else {
				for (let o = 0; o < buf.length; o += chunk)
					if (!c.write({ stdin: buf.subarray(o,
						o + chunk) }))
						await new Promise(res =>
							c.once('drain', res));
			}
			c.write({ close: {} });
			c.end();
		}
		c.write({ init: { sandbox_id: id, command } });
		if (stdin === null)
			c.end();	/* no stdin: half-close after init */
		if (onCall)
			onCall(c);
	});
}

// ---------------------------------------------------------------------------

const tests = [];
const test = (name, fn) => tests.push({ name, fn });
let box;	/* one running sandbox shared by most tests */

test('auth: no authorization is UNAUTHENTICATED', async () => {
	const e = await fails(call('ListSandboxes', {}, { k: null }));
	eq(e.code, grpc.status.UNAUTHENTICATED, 'code');
});

test('auth: a wrong key is UNAUTHENTICATED', async () => {
	const e = await fails(call('ListSandboxes', {},
				   { k: key.replace(/.$/, c => c === '0' ? '1' : '0') }));
	eq(e.code, grpc.status.UNAUTHENTICATED, 'code');
});

test('UNIMPLEMENTED: ConnectSandbox, StreamLogs, templates',
     async () => {
	for (const m of ['ConnectSandbox', 'CreateSandboxFromTemplate'])
	{
		const e = await fails(call(m, {}));
		eq(e.code, grpc.status.UNIMPLEMENTED, m);
	}
	const e = await new Promise(res => {
		const s = client.StreamLogs({ sandbox_id: 'x' }, md());
		s.on('data', () => {});
		s.on('error', res);
	});
	eq(e.code, grpc.status.UNIMPLEMENTED, 'StreamLogs');
});

test('create: CREATING at once, then RUNNING; tags kept', async () => {
	box = await create(['wire', 'shared']);
	ok(/^sb-[0-9a-f]{20}$/.test(box.sandbox_id), 'id ' + box.sandbox_id);
	eq(box.spec.tags.join(','), 'wire,shared', 'tags');
	eq(box.spec.containers[0].image, 'python:3.11', 'image recorded');
	ok(Number(box.status.create_time.seconds) > 0, 'create_time');
});

test('create: the same request_id answers the same sandbox', async () => {
	const rid = crypto.randomUUID();
	const req = { request_id: rid, sandbox: { spec: { containers:
		[{ name: 'main', image: 'x' }], tags: ['idem'] } } };
	const a = await call('CreateSandbox', req);
	const b = await call('CreateSandbox', req);
	eq(b.sandbox_id, a.sandbox_id, 'id');
	await waitState(a.sandbox_id, 'STATE_RUNNING');
	await call('DeleteSandbox', { sandbox_id: a.sandbox_id });
});

test('create: no container is INVALID_ARGUMENT', async () => {
	const e = await fails(call('CreateSandbox', { sandbox: { spec: {} } }));
	eq(e.code, grpc.status.INVALID_ARGUMENT, 'code');
	eq(errorInfo(e).reason, 'CWSANDBOX_INVALID_REQUEST', 'reason');
});

test('get: unknown ID is NOT_FOUND with ErrorInfo', async () => {
	const e = await fails(call('GetSandbox', { sandbox_id: 'sb-nope' }));
	eq(e.code, grpc.status.NOT_FOUND, 'code');
	const ei = errorInfo(e);
	eq(ei.reason, 'CWSANDBOX_SANDBOX_NOT_FOUND', 'reason');
	eq(ei.domain, 'cwsandbox.com', 'domain');
});

test('unknown fields in a request are skipped', async () => {
	const body = Buffer.concat([
		GetReqT.encode({ sandboxId: box.sandbox_id }).finish(),
		Buffer.from([0x98, 0x06, 0x01]),	/* field 99 varint 1 */
		Buffer.from([0xa2, 0x06, 0x02, 0x68, 0x69]) /* 100: "hi" */ ]);
	const r = await new Promise((res, rej) => client.makeUnaryRequest(
		'/coreweave.sandbox.v1.SandboxService/GetSandbox', x => x,
		x => x, body, md(), { deadline: Date.now() + 30000 },
		(e, v) => e ? rej(e) : res(v)));
	eq(SandboxT.decode(r).sandboxId, box.sandbox_id, 'id');
});

test('list: tags AND-match, paging, terminal hidden', async () => {
	const b = await create(['wire', 'other']);
	let l = await call('ListSandboxes', { tags: ['wire'] });
	ok(l.sandboxes.length >= 2, 'two with tag wire');
	l = await call('ListSandboxes', { tags: ['wire', 'other'] });
	eq(l.sandboxes.map(s => s.sandbox_id).join(), b.sandbox_id, 'AND');
	const seen = [];
	let tok = '';
	for (let i = 0; i < 10; i++) {
		l = await call('ListSandboxes', { tags: ['wire'], page_size: 1,
						  page_token: tok });
		ok(l.sandboxes.length <= 1, 'page size');
		seen.push(...l.sandboxes.map(s => s.sandbox_id));
		tok = l.next_page_token;
		if (!tok)
			break;
	}
	ok(seen.includes(b.sandbox_id) && seen.includes(box.sandbox_id),
	   'paged through both');
	eq(new Set(seen).size, seen.length, 'no repeats');
	const d = await call('DeleteSandbox', { sandbox_id: b.sandbox_id });
	eq(d.sandbox.status.state, 'STATE_TERMINATED', 'deleted');
	l = await call('ListSandboxes', { tags: ['other'] });
	eq(l.sandboxes.length, 0, 'terminated hidden');
	l = await call('ListSandboxes', { tags: ['other'],
					  show_terminated: true });
	eq(l.sandboxes.length, 1, 'shown with show_terminated');
	const g = await call('GetSandbox', { sandbox_id: b.sandbox_id });
	eq(g.status.state, 'STATE_TERMINATED', 'get after delete');
	ok(g.status.end_time && Number(g.status.end_time.seconds) > 0,
	   'end_time');
});

test('delete: unknown is NOT_FOUND; allow_missing is OK', async () => {
	const e = await fails(call('DeleteSandbox', { sandbox_id: 'sb-x' }));
	eq(e.code, grpc.status.NOT_FOUND, 'code');
	await call('DeleteSandbox', { sandbox_id: 'sb-x', allow_missing: true });
});

test('exec: argv, stdout/stderr apart, exit code, env', async () => {
	const r = await call('Exec', { sandbox_id: box.sandbox_id,
		command: ['sh', '-c', 'echo "out $FOO"; echo err >&2; exit 7'],
		env: { FOO: 'bar baz' } });
	eq(r.stdout.toString(), 'out bar baz\n', 'stdout');
	eq(r.stderr.toString(), 'err\n', 'stderr');
	eq(r.exit_code, 7, 'exit');
	eq(r.stdout_bytes_produced, '12', 'produced');
});

test('exec: max_output_bytes truncates and says so', async () => {
	const r = await call('Exec', { sandbox_id: box.sandbox_id,
		command: ['head', '-c', '100000', '/dev/zero'],
		max_output_bytes: 1000 });
	eq(r.stdout.length, 1000, 'kept');
	eq(r.stdout_truncated, true, 'flag');
	eq(r.stdout_bytes_produced, '100000', 'produced');
});

test('exec: errors (no command, unknown sandbox, missing program)',
     async () => {
	let e = await fails(call('Exec', { sandbox_id: box.sandbox_id }));
	eq(e.code, grpc.status.INVALID_ARGUMENT, 'no command');
	e = await fails(call('Exec', { sandbox_id: 'sb-none',
				       command: ['true'] }));
	eq(e.code, grpc.status.NOT_FOUND, 'unknown sandbox');
	const r = await call('Exec', { sandbox_id: box.sandbox_id,
				       command: ['/no/such/program'] });
	eq(r.exit_code, 127, 'exit of a missing program');
	const s = await streamExec(box.sandbox_id, ['/no/such/program'], {});
	eq(s.exit, 127, 'StreamExec exit of a missing program');
	ok(s.err.length > 0, 'a sentence on stderr');
});

test('exec: grpc-timeout ends a long command (DEADLINE_EXCEEDED)',
     async () => {
	const t0 = Date.now();
	const e = await fails(call('Exec', { sandbox_id: box.sandbox_id,
		command: ['sleep', '30'] }, { secs: 1.5 }));
	eq(e.code, grpc.status.DEADLINE_EXCEEDED, 'code');
	ok(Date.now() - t0 < 6000, 'took ' + (Date.now() - t0) + ' ms');
	/* the server killed it: no sleep 30 left in the sandbox */
	const end = Date.now() + 10000;
	let left;
	do {
		const r = await call('Exec', { sandbox_id: box.sandbox_id,
			command: ['sh', '-c', 'for p in /proc/[0-9]*; do ' +
				  'tr "\\0" " " < $p/cmdline; echo; done'] });
		left = r.stdout.toString().split('\n')
			.filter(l => l.trim() === 'sleep 30').length;
	} while (left && Date.now() < end && await sleep(100) === undefined);
	eq(left, 0, 'sleep 30 processes left');
});

test('files: write creates parents, read returns the bytes', async () => {
	const data = crypto.randomBytes(300000);
	await call('WriteFile', { sandbox_id: box.sandbox_id,
				  path: '/tmp/wire/a/b.bin', content: data });
	const r = await call('ReadFile', { sandbox_id: box.sandbox_id,
					   path: '/tmp/wire/a/b.bin' });
	ok(Buffer.compare(r.content, data) === 0, 'content');
	await call('WriteFile', { sandbox_id: box.sandbox_id,
				  path: '/tmp/wire/empty', content: Buffer.alloc(0) });
	const z = await call('ReadFile', { sandbox_id: box.sandbox_id,
					   path: '/tmp/wire/empty' });
	eq(z.content.length, 0, 'empty file');
});

test('files: missing, directory, relative path', async () => {
	let e = await fails(call('ReadFile', { sandbox_id: box.sandbox_id,
					       path: '/tmp/wire/nope' }));
	eq(e.code, grpc.status.NOT_FOUND, 'missing');
	eq(errorInfo(e).reason, 'CWSANDBOX_FILE_NOT_FOUND', 'reason');
	eq(errorInfo(e).metadata.filepath, '/tmp/wire/nope', 'filepath');
	e = await fails(call('ReadFile', { sandbox_id: box.sandbox_id,
					   path: '/tmp' }));
	eq(e.code, grpc.status.FAILED_PRECONDITION, 'directory');
	eq(errorInfo(e).reason, 'CWSANDBOX_FILE_IS_DIRECTORY', 'reason');
	e = await fails(call('ReadFile', { sandbox_id: box.sandbox_id,
					   path: 'tmp/x' }));
	eq(e.code, grpc.status.INVALID_ARGUMENT, 'relative');
});

test('files: above 32 MiB is FAILED_PRECONDITION FILE_TOO_LARGE',
     async () => {
	const big = Buffer.alloc((32 << 20) + 1);
	let e = await fails(call('WriteFile', { sandbox_id: box.sandbox_id,
		path: '/tmp/wire/big', content: big }));
	eq(e.code, grpc.status.FAILED_PRECONDITION, 'write code');
	let ei = errorInfo(e);
	eq(ei.reason, 'CWSANDBOX_FILE_TOO_LARGE', 'reason');
	eq(ei.metadata.max_size_bytes, String(32 << 20), 'max');
	await call('Exec', { sandbox_id: box.sandbox_id, command: ['sh', '-c',
		'head -c 33554433 /dev/zero > /tmp/wire/big'] });
	e = await fails(call('ReadFile', { sandbox_id: box.sandbox_id,
					   path: '/tmp/wire/big' }));
	eq(e.code, grpc.status.FAILED_PRECONDITION, 'read code');
	ei = errorInfo(e);
	eq(ei.metadata.size_bytes, '33554433', 'size');
	/* exactly the cap is fine */
	const cap = crypto.randomBytes(32 << 20);
	await call('WriteFile', { sandbox_id: box.sandbox_id,
				  path: '/tmp/wire/cap', content: cap });
	const r = await call('ReadFile', { sandbox_id: box.sandbox_id,
					   path: '/tmp/wire/cap' });
	ok(Buffer.compare(r.content, cap) === 0, '32 MiB round trip');
});

test('StreamExec: ready first and promptly; stdin, close, exit',
     async () => {
	const r = await streamExec(box.sandbox_id, ['sh', '-c',
		'cat; echo e >&2; exit 3'], { stdin: Buffer.from('hello\n') });
	eq(r.status.code, grpc.status.OK, 'status ' + r.status.details);
	eq(r.msgs[0], 'ready', 'first message');
	ok(r.ready_ms >= 0 && r.ready_ms < 5000, 'ready after ' + r.ready_ms);
	eq(r.out, 'hello\n', 'stdout');
	eq(r.err, 'e\n', 'stderr');
	eq(r.exit, 3, 'exit');
	eq(r.msgs[r.msgs.length - 1], 'exit', 'exit last');
});

test('StreamExec: half-close right after init means empty stdin',
     async () => {
	const r = await streamExec(box.sandbox_id, ['sh', '-c',
		'wc -c; echo done'], {});
	eq(r.out.replace(/\s+/g, ' ').trim(), '0 done', 'stdout');
	eq(r.exit, 0, 'exit');
});

test('StreamExec: a signal shows as 128+N', async () => {
	const r = await streamExec(box.sandbox_id, ['sh', '-c',
		'kill -TERM $$'], {});
	eq(r.exit, 143, 'exit');
});

test('StreamExec: protocol errors', async () => {
	let st = await new Promise(res => {
		const c = client.StreamExec(md());
		c.on('data', () => {});
		c.on('error', () => {});
		c.on('status', res);
		c.write({ stdin: Buffer.from('x') });
		c.end();
	});
	eq(st.code, grpc.status.INVALID_ARGUMENT, 'stdin before init');
	let r = await streamExec('sb-none', ['true'], {});
	eq(r.status.code, grpc.status.NOT_FOUND, 'unknown sandbox');
	r = await streamExec(box.sandbox_id, [], {});
	eq(r.status.code, grpc.status.INVALID_ARGUMENT, 'empty command');
});

test('StreamExec: grpc-timeout kills the command', async () => {
	const r = await streamExec(box.sandbox_id, ['sleep', '30'],
				   { secs: 1.5 });
	eq(r.status.code, grpc.status.DEADLINE_EXCEEDED, 'code');
});

test('StreamExec: 100 MiB of stdin, checksummed', async () => {
	const total = 100 << 20, piece = crypto.randomBytes(1 << 20);
	const h = crypto.createHash('sha256');
	let sent = 0, off = 0;
	const gen = () => {
		if (sent >= total)
			return null;
		const d = piece.subarray(off, off + 65536);
		off = (off + 65536) % piece.length;
		sent += d.length;
		h.update(d);
		return d;
	};
	const t0 = Date.now();
	const r = await streamExec(box.sandbox_id, ['sh', '-c',
		'sha256sum | cut -d" " -f1'], { stdin: gen, secs: 300 });
	const secs = (Date.now() - t0) / 1000;
	eq(r.status.code, grpc.status.OK, 'status ' + r.status.details);
	eq(r.out.trim(), h.digest('hex'), 'sha256');
	eq(r.exit, 0, 'exit');
	console.log(`# 100 MiB stdin in ${secs.toFixed(1)} s ` +
		    `(${(100 / secs).toFixed(0)} MiB/s)`);
});

test('StreamExec: 64 MiB of output, in order', async () => {
	const t0 = Date.now();
	const r = await streamExec(box.sandbox_id, ['sh', '-c',
		'head -c 67108864 /dev/zero | tr "\\0" a'], { secs: 300 });
	eq(r.status.code, grpc.status.OK, 'status');
	eq(r.outBytes, 64 << 20, 'bytes');
	console.log(`# 64 MiB stdout in ${((Date.now() - t0) / 1000)
		.toFixed(1)} s`);
});

test('StreamExec: a client that vanishes mid-stream ends the command',
     async () => {
	const id = box.sandbox_id;
	/* a separate process, killed hard while its stream is open */
	const child = spawn(process.execPath, ['-e', `
		const grpc = require(${JSON.stringify(
			path.join(modules, '@grpc/grpc-js'))});
		const loader = require(${JSON.stringify(
			path.join(modules, '@grpc/proto-loader'))});
		const pkg = grpc.loadPackageDefinition(loader.loadSync(
			${JSON.stringify(path.join(protoDir, 'sandbox.proto'))},
			{ keepCase: true, defaults: true, oneofs: true }))
			.coreweave.sandbox.v1;
		const c = new pkg.SandboxService(${JSON.stringify(target)},
			grpc.credentials.createInsecure());
		const m = new grpc.Metadata();
		m.add('authorization', 'Bearer ' + process.env.CWSANDBOX_API_KEY);
		const s = c.StreamExec(m);
		s.on('data', d => { if (d.output) process.stdout.write('up\\n'); });
		s.on('error', () => {});
		s.write({ init: { sandbox_id: ${JSON.stringify(id)},
			command: ['sh', '-c',
			  'echo $$ > /tmp/wire-vanish; echo go; exec sleep 1000'] } });
		s.write({ stdin: Buffer.from('x') });
	`], { stdio: ['ignore', 'pipe', 'inherit'] });
	await new Promise((res, rej) => {
		child.stdout.once('data', res);
		child.once('exit', () => rej(new Error('child died early')));
		setTimeout(() => rej(new Error('no output in 20 s')), 20000);
	});
	child.kill('SIGKILL');
	const end = Date.now() + 15000;
	let alive;
	do {
		await sleep(100);
		const r = await call('Exec', { sandbox_id: id, command: ['sh',
			'-c', 'kill -0 "$(cat /tmp/wire-vanish)" 2>/dev/null'] });
		alive = r.exit_code === 0;
	} while (alive && Date.now() < end);
	eq(alive, false, 'command still running after its client died');
	await call('GetSandbox', { sandbox_id: id });	/* server fine */
});

test('many calls at once on one connection', async () => {
	const rs = await Promise.all(Array.from({ length: 40 }, (_, i) =>
		i % 2 ? call('GetSandbox', { sandbox_id: box.sandbox_id })
		      : call('Exec', { sandbox_id: box.sandbox_id,
				       command: ['echo', String(i)] })));
	rs.forEach((r, i) => {
		if (i % 2 === 0)
			eq(r.stdout.toString(), i + '\n', 'exec ' + i);
	});
});

test('purge: dry_run counts, then deletes by tag', async () => {
	const a = await create(['purge-me']);
	let r = await call('PurgeSandboxes', { tags: ['purge-me'],
					       dry_run: true });
	eq(r.purge_count, 1, 'dry run');
	eq((await call('GetSandbox', { sandbox_id: a.sandbox_id })).status
	   .state, 'STATE_RUNNING', 'still running');
	r = await call('PurgeSandboxes', { tags: ['purge-me'] });
	eq(r.purge_count, 1, 'purged');
	eq((await call('GetSandbox', { sandbox_id: a.sandbox_id })).status
	   .state, 'STATE_TERMINATED', 'terminated');
});

test('snapshots: create (READY, request_id kept, idempotent), get, list ' +
     'by source and paged, restore into a new sandbox, in use, delete',
     async () => {
	const src = await create(['fss']);
	await call('WriteFile', { sandbox_id: src.sandbox_id,
		path: '/tmp/fss.txt', content: Buffer.from('snap me\n') });
	const rid = 'wire:' + crypto.randomUUID();
	const f = await call('CreateFileSystemSnapshot',
			     { sandbox_id: src.sandbox_id, request_id: rid });
	ok(/^fss-[0-9a-f]{20}$/.test(f.file_system_snapshot_id),
	   'id ' + f.file_system_snapshot_id);
	eq(f.state, 'SNAPSHOT_STATE_READY', 'state');
	eq(f.request_id, rid, 'request_id');
	eq(f.source_sandbox_id, src.sandbox_id, 'source');
	eq(f.trigger, 'SNAPSHOT_TRIGGER_MANUAL', 'trigger');
	ok(Number(f.create_time.seconds) > 0, 'create_time');
	const again = await call('CreateFileSystemSnapshot',
				 { sandbox_id: src.sandbox_id,
				   request_id: rid });
	eq(again.file_system_snapshot_id, f.file_system_snapshot_id,
	   'same request_id, same snapshot');
	const f2 = await call('CreateFileSystemSnapshot',
			      { sandbox_id: src.sandbox_id });
	ok(f2.file_system_snapshot_id !== f.file_system_snapshot_id,
	   'a second snapshot');
	const g = await call('GetFileSystemSnapshot',
			     { file_system_snapshot_id:
			       f.file_system_snapshot_id });
	eq(g.request_id, rid, 'get: request_id');
	let e = await fails(call('GetFileSystemSnapshot',
				 { file_system_snapshot_id: 'fss-nope' }));
	eq(e.code, grpc.status.NOT_FOUND, 'get unknown: code');
	e = await fails(call('CreateFileSystemSnapshot',
			     { sandbox_id: 'sb-nope' }));
	eq(e.code, grpc.status.NOT_FOUND, 'snapshot of unknown: code');
	/* list: filter by source, pages of 1 */
	const seen = [];
	let tok = '';
	for (let i = 0; i < 10; i++) {
		const l = await call('ListFileSystemSnapshots',
				     { source_sandbox_id: src.sandbox_id,
				       page_size: 1, page_token: tok });
		for (const x of l.file_system_snapshots)
			seen.push(x.file_system_snapshot_id);
		tok = l.next_page_token;
		if (!tok)
			break;
	}
	eq(seen.sort().join(','), [f.file_system_snapshot_id,
	   f2.file_system_snapshot_id].sort().join(','), 'listed by source');
	/* restore: a scratch volume with restore_from_snapshot_id */
	const r = await create(['fss-restored'], { volumes: [{ name: 'v',
		scratch: { restore_from_snapshot_id:
			   f.file_system_snapshot_id } }] });
	const rf = await call('ReadFile', { sandbox_id: r.sandbox_id,
					    path: '/tmp/fss.txt' });
	eq(rf.content.toString(), 'snap me\n', 'restored content');
	e = await fails(call('CreateSandbox', { sandbox: { spec: {
		containers: [{ name: 'main', image: 'x' }],
		volumes: [{ name: 'v', scratch: {
			restore_from_snapshot_id: 'fss-00' } }] } } }));
	eq(e.code, grpc.status.NOT_FOUND, 'restore of unknown: code');
	/* in use by the restored sandbox; deletable once it is gone */
	e = await fails(call('DeleteFileSystemSnapshot',
			     { file_system_snapshot_id:
			       f.file_system_snapshot_id }));
	eq(e.code, grpc.status.FAILED_PRECONDITION, 'delete in use: code');
	await call('DeleteSandbox', { sandbox_id: r.sandbox_id });
	for (const x of [f, f2]) {
		const d = await call('DeleteFileSystemSnapshot',
				     { file_system_snapshot_id:
				       x.file_system_snapshot_id });
		eq(d.file_system_snapshot_id, x.file_system_snapshot_id,
		   'delete answers the record');
	}
	e = await fails(call('DeleteFileSystemSnapshot',
			     { file_system_snapshot_id:
			       f.file_system_snapshot_id }));
	eq(e.code, grpc.status.NOT_FOUND, 'deleted: code');
	await call('DeleteFileSystemSnapshot', { file_system_snapshot_id:
		f.file_system_snapshot_id, allow_missing: true });
	await call('DeleteSandbox', { sandbox_id: src.sandbox_id });
});

test('delete with a grace period: TERMINATED, exec refused', async () => {
	const d = await call('DeleteSandbox', { sandbox_id: box.sandbox_id,
						grace_period_seconds: 2 });
	eq(d.sandbox.status.state, 'STATE_TERMINATED', 'state');
	const e = await fails(call('Exec', { sandbox_id: box.sandbox_id,
					     command: ['true'] }));
	eq(e.code, grpc.status.FAILED_PRECONDITION, 'exec after delete');
	box = null;
});

(async () => {
	let passed = 0, failed = 0;
	const only = process.env.GRPC_TEST_ONLY;
	for (const t of tests) {
		if (only && !t.name.includes(only) && !t.name.startsWith('create:'))
			continue;
		const t0 = Date.now();
		try {
			await t.fn();
			passed++;
			console.log(`ok   ${t.name} (${Date.now() - t0} ms)`);
		} catch (e) {
			failed++;
			console.log(`FAIL ${t.name}: ${e.message || e} ` +
				    `${e.code !== undefined ? '(code ' + e.code +
				    ': ' + e.details + ')' : ''}`);
		}
	}
	if (box)
		await call('DeleteSandbox', { sandbox_id: box.sandbox_id })
			.catch(() => {});
	client.close();
	console.log(`${passed} passed, ${failed} failed`);
	process.exit(failed ? 1 : 0);
})();
