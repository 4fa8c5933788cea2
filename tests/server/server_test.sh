#!/bin/sh
# server_test.sh - drive sbxfs-server as a client of Wrenn's documented API
# would (curl + a raw WebSocket client), checking shapes, codes and quirks.
# usage: server_test.sh [SERVER_BINARY]   (prints "N passed, N failed")
set -u
BIN=${1:-${SBXFS_SERVER:-sbxfs-server}}
HERE=$(cd "$(dirname "$0")" && pwd)
WS="python3 $HERE/wsclient.py"
T=$(mktemp -d /tmp/server-test.XXXXXX)
DATA=$T/data
pass=0 fail=0
SPID=

cleanup() {
	if [ -n "$SPID" ]; then
		kill "$SPID" 2>/dev/null
		wait "$SPID" 2>/dev/null
	fi
	rm -rf "$T" 2>/dev/null
}
trap cleanup EXIT INT TERM

ok() { pass=$((pass + 1)); echo "ok   - $1"; }
ko() { fail=$((fail + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && echo "       $2"; }
check() { # name, condition...
	n=$1; shift
	if "$@"; then ok "$n"; else ko "$n" "$(head -c 400 $T/body 2>/dev/null)"; fi
}

start_server() {
	"$BIN" --data "$DATA" --port 0 "$@" >$T/out 2>>$T/err &
	SPID=$!
	i=0
	while ! grep -q '^listening on' $T/out 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 100 ] && { echo "server did not start"; cat $T/err; exit 1; }
		sleep 0.1
	done
	PORT=$(sed -n 's/^listening on 127.0.0.1://p' $T/out)
	B=http://127.0.0.1:$PORT
}

# req METHOD PATH [curl args...] -> $code, body in $T/body, headers $T/hdr
req() {
	m=$1 p=$2; shift 2
	code=$(curl -s -X "$m" -o $T/body -D $T/hdr -w '%{http_code}' \
		-H "X-API-Key: $KEY" "$@" "$B$p")
}
jqb() { jq -r "$1" $T/body 2>/dev/null; }
# PIDs of a capsule's sandbox-init that are not zombies
live_init() {
	for p in $(pgrep -f "^sandbox-init $1\$"); do
		s=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' /proc/$p/status 2>/dev/null)
		[ -n "$s" ] && [ "$s" != Z ] && echo $p
	done
}
hdr() { tr -d '\r' <$T/hdr | grep -i "^$1:" | head -1 | cut -d' ' -f2-; }
# until SECONDS CMD...: run CMD every 0.1 s until it succeeds or SECONDS
# passed (a bound, not a delay: a condition instead of a fixed sleep)
until_ok() {
	n=$(($1 * 10)); shift
	while ! "$@"; do
		n=$((n - 1))
		[ $n -gt 0 ] || return 1
		sleep 0.1
	done
}
capsule_is() { req GET /v1/capsules/$1; [ "$(jqb .status)" = "$2" ]; }
no_live_init() { [ -z "$(live_init $1)" ]; }

start_server
KEY=$(grep -o 'wrn_[0-9a-f]*' $T/out)
check "first start prints a wrn_ key" [ ${#KEY} -eq 36 ]
check "key file is 0600" [ "$(stat -c %a $DATA/server-key)" = 600 ]
check "--print-key reads it" [ "$("$BIN" --data $DATA --print-key)" = "$KEY" ]
check "key not in server stderr" sh -c "! grep -q '$KEY' $T/err"
check "binds loopback" grep -q '^listening on 127.0.0.1:' $T/out

# ---- auth, routing ----
code=$(curl -s -o $T/body -w '%{http_code}' $B/v1/capsules)
check "no key: 401" [ "$code" = 401 ]
check "no key: message" [ "$(jqb .error.message)" = "X-API-Key or Authorization: Bearer <token> required" ]
code=$(curl -s -o $T/body -w '%{http_code}' -H "X-API-Key: wrn_0123456789abcdef0123456789abcdef" -H "Authorization: Bearer x" $B/v1/capsules)
check "bad key (even with Bearer): 401 invalid API key" [ "$code" = 401 -a "$(jqb .error.code)" = unauthorized -a "$(jqb .error.message)" = "invalid API key" ]
req GET /v1/nothing
check "unknown route: plain 404" [ "$code" = 404 -a "$(cat $T/body)" = "404 page not found" ]
req PUT /v1/capsules
check "wrong method: 405" [ "$code" = 405 ]
req GET /v1/capsules/not-an-id
check "malformed ID: 400 invalid sandbox ID" [ "$code" = 400 -a "$(jqb .error.message)" = "invalid sandbox ID" ]
req GET /v1/capsules/cl-0000000000000000000000000
check "unknown capsule: 404 sandbox not found" [ "$code" = 404 -a "$(jqb .error.code)" = not_found ]
req GET /health
check "health" [ "$code" = 200 -a "$(jqb .status)" = ok ]

# ---- create ----
req POST /v1/capsules
check "create with empty body: 400 invalid JSON body" [ "$code" = 400 -a "$(jqb .error.message)" = "invalid JSON body" ]
req POST /v1/capsules -H 'Content-Type: application/json' -d '{"template":"no/such"}'
check "bad template name: 400" [ "$code" = 400 ]
req POST /v1/capsules -d '{"template":"nosuchtemplate"}'
check "unknown template: 404" [ "$code" = 404 ]
req POST /v1/capsules -d '{"unknown":1}'
check "create: 201 running" [ "$code" = 201 -a "$(jqb .status)" = running ]
ID=$(jqb .id)
check "capsule id format" sh -c "echo $ID | grep -Eq '^cl-[0-9a-z]{25}$'"
check "defaults" [ "$(jqb '.template,.vcpus,.memory_mb,.timeout_sec' | tr '\n' ' ')" = "minimal 1 512 0 " ]
check "no guest_ip, RFC 3339 created_at" sh -c "[ \"\$(jq -r .guest_ip $T/body)\" = null ] && jq -r .created_at $T/body | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$'"
C=/v1/capsules/$ID
req GET /v1/capsules
check "list: bare array with the capsule" [ "$code" = 200 -a "$(jqb 'type')" = array -a "$(jqb "map(select(.id==\"$ID\"))|length")" = 1 ]
req GET $C
check "get" [ "$code" = 200 -a "$(jqb .id)" = "$ID" ]

# ---- exec ----
req POST $C/exec -d '{"cmd":"/bin/sh","args":["-c","echo hi; echo err >&2; exit 3"]}'
check "exec: 200 stdout/stderr/exit_code" [ "$code" = 200 -a "$(jqb .stdout)" = hi -a "$(jqb .stderr)" = err -a "$(jqb .exit_code)" = 3 -a "$(jqb .encoding)" = utf-8 ]
check "exec: sandbox_id, cmd, duration_ms" [ "$(jqb .sandbox_id)" = "$ID" -a "$(jqb .cmd)" = /bin/sh -a "$(jqb '.duration_ms|type')" = number ]
req POST $C/exec -d '{"cmd":"ls -la"}'
check "exec: no shell (127)" [ "$(jqb .exit_code)" = 127 ]
req POST $C/exec -d '{}'
check "exec: cmd required" [ "$code" = 400 -a "$(jqb .error.message)" = "cmd is required" ]
req POST $C/exec -d '{"cmd":"printf","args":["\\377ok"]}'
check "exec: base64 when not UTF-8" [ "$(jqb .encoding)" = base64 -a "$(jqb .stdout | base64 -d | od -An -c | tr -d ' \n')" = '377ok' ]
req POST $C/exec -d '{"cmd":"sh","args":["-c","kill -9 $$"]}'
check "exec: killed by signal = -1" [ "$(jqb .exit_code)" = -1 ]
req POST $C/exec -d '{"cmd":"pwd","cwd":"/tmp","envs":{"A":"1"}}'
check "exec: foreground cwd ignored" [ "$(jqb .stdout)" = /root ]
req POST $C/exec -d '{"cmd":"sh","args":["-c","echo ok; sleep 5"],"timeout_sec":1}'
check "exec: timeout -> 502 agent_error, no output" [ "$code" = 502 -a "$(jqb .error.code)" = agent_error ] 
req POST $C/exec -d '{"cmd":"sleep","args":["60"],"background":true}'
check "background: 202 pid + proc- tag" [ "$code" = 202 -a "$(jqb '.pid > 0')" = true ] && sh -c "jq -r .tag $T/body | grep -Eq '^proc-[0-9a-f]{8}$'"
PID=$(jqb .pid) TAG=$(jqb .tag)
req GET $C/processes
check "processes lists it" [ "$(jqb ".processes|map(select(.pid==$PID and .tag==\"$TAG\"))|length")" = 1 ]
req DELETE "$C/processes/$TAG"
check "kill by tag: 204" [ "$code" = 204 ]
req DELETE "$C/processes/999999"
check "kill unknown pid: 404" [ "$code" = 404 ]

# ---- files ----
printf 'hello\n' >$T/h.txt
req POST $C/files/write -F path=/tmp/st/a/b/hi.txt -F file=@$T/h.txt
check "write: 204, parents created" [ "$code" = 204 ]
req POST $C/files/read -d '{"path":"/tmp/st/a/b/hi.txt"}'
check "read: bytes, octet-stream" [ "$code" = 200 -a "$(cat $T/body)" = hello -a "$(hdr content-type)" = application/octet-stream ]
check "read: no Content-Disposition" [ -z "$(hdr content-disposition)" ]
req POST $C/files/write -F path=/tmp/st/x -F 'file=hi'
check "write: file part without filename -> 400" [ "$code" = 400 -a "$(jqb .error.message)" = "file field is required" ]
req POST $C/files/write -F file=@$T/h.txt
check "write: no path -> 400" [ "$code" = 400 -a "$(jqb .error.message)" = "path field is required" ]
req POST $C/files/write -d 'x'
check "write: not multipart -> 400" [ "$code" = 400 ]
req POST $C/files/write -F file=@$T/h.txt -F path=/tmp/st/order
check "write: order does not matter" [ "$code" = 204 ]
# a symlinked directory in the path is followed inside the capsule
X=srvtest-$$
req POST $C/exec -d '{"cmd":"sh","args":["-c","ln -s / /tmp/up; ln -s /etc/hostname /tmp/lf; ln -s /nowhere /tmp/dl"]}'
req POST $C/files/write -F path=/tmp/up/$X.2 -F file=@$T/h.txt
check "write through a symlinked dir: 204" [ "$code" = 204 ]
req POST $C/exec -d "{\"cmd\":\"cat\",\"args\":[\"/$X.2\"]}"
check "write through a symlinked dir: file at the target" [ "$(jqb .stdout)" = hello ]
check "write through a symlinked dir: host untouched" [ ! -e /$X.2 ]
req POST $C/files/write -F path=/tmp/up/tmp/up/$X.d/f -F file=@$T/h.txt
req POST $C/files/read -d "{\"path\":\"/$X.d/f\"}"
check "write: missing parents created under a symlinked dir" [ "$code" = 200 -a "$(cat $T/body)" = hello ]
check "write: ... still not on the host" [ ! -e /$X.d ]
req POST $C/files/mkdir -d "{\"path\":\"/tmp/up/$X.m\"}"
check "mkdir through a symlinked dir: 200" [ "$code" = 200 -a "$(jqb .entry.type)" = directory ]
req POST $C/files/mkdir -d '{"path":"/tmp/up"}'
check "mkdir on a symlink to a dir: 409" [ "$code" = 409 ]
req POST $C/files/write -F path=/tmp/lf/x -F file=@$T/h.txt
check "write under a symlink to a file: 502 not a directory" [ "$code" = 502 -a "$(jqb .error.message)" = "internal: write file: not a directory" ]
req POST $C/files/write -F path=/tmp/dl/x -F file=@$T/h.txt
check "write under a dangling symlink: 502" [ "$code" = 502 ]
req POST $C/files/write -F path=/tmp/st/lt -F file=@$T/h.txt
req POST $C/exec -d '{"cmd":"ln","args":["-s","lt","/tmp/st/rl"]}'
req POST $C/files/read -d '{"path":"/tmp/st/rl"}'
check "read through a symlink to a file" [ "$code" = 200 -a "$(cat $T/body)" = hello ]
req POST $C/files/stream/read -d '{"path":"/tmp/st/rl"}'
check "stream read through a symlink to a file" [ "$code" = 200 -a "$(cat $T/body)" = hello ]
req POST $C/files/read -d '{"path":"/tmp/dl"}'
check "read a dangling symlink: 502 does not exist" [ "$code" = 502 ] && check "... envd's 404 text" sh -c "jq -r .error.message $T/body | grep -q 'does not exist'"
req POST $C/files/read -d '{"path":"/tmp/up"}'
check "read a symlink to a dir: 502" [ "$code" = 502 ]
req POST $C/exec -d "{\"cmd\":\"rm\",\"args\":[\"-rf\",\"/$X.2\",\"/$X.d\",\"/$X.m\"]}"
# Expect: 100-continue (curl asks for it above 1 MiB and waits 1 s)
head -c 1500000 /dev/urandom >$T/1m5
t=$(curl -sv -o $T/body -w '%{http_code} %{time_total}' -H "X-API-Key: $KEY" -F path=/tmp/st/1m5 -F file=@$T/1m5 $B$C/files/write 2>$T/verbose)
check "Expect: 100-continue answered, no 1 s stall" sh -c "[ '${t% *}' = 204 ] && grep -q '^< HTTP/1.1 100 Continue' $T/verbose && ! grep -q 'Done waiting' $T/verbose && awk 'BEGIN{exit !(${t#* } < 0.9)}'"
req POST $C/files/read -d '{"path":"/tmp/st/1m5"}'
check "Expect: 100-continue: body byte-exact" cmp -s $T/1m5 $T/body
req POST $C/files/write -H 'Expect: 100-continue' -F path=/tmp/st/small -F file=@$T/h.txt
check "Expect on a small body: 100 then 204" [ "$code" = 204 -a "$(tr -d '\r' <$T/hdr | grep -c '^HTTP/1.1 100 Continue$')" = 1 ]
req POST /v1/capsules/cl-0000000000000000000000000/files/write -H 'Expect: 100-continue' -F path=/x -F file=@$T/1m5
check "Expect, answer before reading: no 100" [ "$code" = 404 ] && check "... and no interim line" sh -c "! grep -q '100 Continue' $T/hdr"
head -c 1000000 /dev/urandom >$T/big
req POST $C/files/stream/write -F path=rel/big -F file=@$T/big
check "stream write: 204 (relative path under /root)" [ "$code" = 204 ]
req POST $C/files/stream/read -d '{"path":"/root/rel/big"}'
check "stream read: byte-exact, chunked" sh -c "cmp -s $T/big $T/body && tr -d '\r' <$T/hdr | grep -qi '^transfer-encoding: chunked'"
req POST $C/files/stream/write -F file=@$T/h.txt -F path=/tmp/st/fileFirst
req POST $C/files/read -d '{"path":"/tmp/st/fileFirst"}'
check "stream write: file before path -> empty file" [ "$code" = 200 -a ! -s $T/body ]
req POST $C/files/read -d '{"path":"/tmp/st/missing"}'
check "read missing: 502 agent_error" [ "$code" = 502 -a "$(jqb .error.code)" = agent_error ]
req POST $C/files/stream/read -d '{"path":"/tmp/st/missing"}'
check "stream read missing: 200 empty" [ "$code" = 200 -a ! -s $T/body -a "$(hdr content-length)" = 0 ]
head -c 3000000 /dev/zero >$T/3m
req POST $C/files/write -F path=/tmp/st/3m -F file=@$T/3m
check "write over envd ceiling: 502" [ "$code" = 502 -a "$(jqb .error.code)" = agent_error ]
req POST $C/exec -d '{"cmd":"sh","args":["-c","chmod 755 /tmp/st/a; ln -s /tmp/st/a/b/hi.txt /tmp/st/ln; ln -s /nowhere /tmp/st/broken"]}'
req POST $C/files/list -d '{"path":"/tmp/st"}'
check "list: entries" [ "$code" = 200 -a "$(jqb '.entries|length')" -ge 4 ]
check "list: dir mode decimal" [ "$(jqb '.entries[]|select(.name=="a")|.mode,.type,.path' | tr '\n' ' ')" = "493 directory /tmp/st/a " ]
check "list: symlink = target type + symlink_target" [ "$(jqb '.entries[]|select(.name=="ln")|.type,.symlink_target' | tr '\n' ' ')" = "file /tmp/st/a/b/hi.txt " ]
check "list: broken link unknown" [ "$(jqb '.entries[]|select(.name=="broken")|.type')" = unknown ]
check "list: FileEntry fields" [ "$(jqb '.entries[]|select(.name=="order")|keys|join(",")')" = "group,mode,modified_at,name,owner,path,permissions,size,type" ]
req POST $C/files/list -d '{"path":"/tmp/st","depth":3}'
check "list: depth 3 recurses" [ "$(jqb '.entries[]|select(.path=="/tmp/st/a/b/hi.txt")|.size')" = 6 ]
req POST $C/files/list -d '{"path":"/tmp/st/none"}'
check "list missing: 502" [ "$code" = 502 ]
req POST $C/files/mkdir -d '{"path":"/tmp/st/m/n"}'
check "mkdir: 200 entry" [ "$code" = 200 -a "$(jqb .entry.type)" = directory -a "$(jqb .entry.name)" = n ]
req POST $C/files/mkdir -d '{"path":"/tmp/st/m/n"}'
check "mkdir existing: 409 conflict" [ "$code" = 409 -a "$(jqb .error.code)" = conflict ]
req POST $C/files/mkdir -d '{"path":"/tmp/st/order"}'
check "mkdir on a file: 400" [ "$code" = 400 ]
req POST $C/files/remove -d '{"path":"/tmp/st/a"}'
check "remove: recursive 204" [ "$code" = 204 ]
req POST $C/files/remove -d '{"path":"/tmp/st/a"}'
check "remove missing: 502" [ "$code" = 502 ]

# ---- exec/stream ----
$WS 127.0.0.1 $PORT $C/exec/stream $KEY '{"type":"start","cmd":"/bin/sh","args":["-c","echo 1; echo \"<&>\" >&2; exit 2"]}' >$T/ws
check "ws: 101 without subprotocol" sh -c "grep -q ' 101 ' $T/ws && ! grep -q sec-websocket-protocol $T/ws"
check "ws: start with pid" grep -Eq '^msg: \{"type":"start","pid":[1-9][0-9]*\}$' $T/ws
check "ws: stdout" grep -Fxq 'msg: {"type":"stdout","data":"1\n"}' $T/ws
check "ws: stderr with HTML escapes" grep -Fxq 'msg: {"type":"stderr","data":"\u003c\u0026\u003e\n"}' $T/ws
check "ws: exit_code" grep -Fxq 'msg: {"type":"exit","exit_code":2}' $T/ws
check "ws: newline-terminated messages" sh -c "! grep -q NO-NEWLINE $T/ws"
check "ws: TCP dropped without close frame" grep -q 'eof close_frame=0' $T/ws
$WS 127.0.0.1 $PORT $C/exec/stream $KEY '{"type":"start","cmd":"head","args":["-c","300000","/dev/zero"]}' >$T/ws
check "ws: frames <= 4082 bytes, big messages fragmented" sh -c "[ \$(sed -n 's/^maxframe: //p' $T/ws) -le 4082 ] && [ \$(sed -n 's/^maxmsg: //p' $T/ws) -gt 4082 ] && grep -q '^frag: [2-9]' $T/ws"
check "ws: 300000 bytes arrive" [ "$(grep '"type":"stdout"' $T/ws | grep -o 'u0000' | wc -l)" = 300000 ]
$WS 127.0.0.1 $PORT $C/exec/stream $KEY '{"type":"start","cmd":"printf","args":["a\\377b"]}' >$T/ws
check "ws: invalid UTF-8 becomes U+FFFD" grep -Fxq 'msg: {"type":"stdout","data":"a\ufffdb"}' $T/ws
$WS 127.0.0.1 $PORT $C/exec/stream $KEY '{"type":"hello"}' >$T/ws
check "ws: first message must be start" grep -Fq "first message must be type 'start' with a 'cmd' field" $T/ws
$WS 127.0.0.1 $PORT $C/exec/stream - '{"type":"start","cmd":"ls"}' >$T/ws
check "ws: no header auth -> 101 then authentication failed" sh -c "grep -q ' 101 ' $T/ws && grep -Fq 'authentication failed' $T/ws"
$WS 127.0.0.1 $PORT /v1/capsules/bad/exec/stream $KEY >$T/ws
check "ws: malformed ID -> HTTP 400 before upgrade" grep -q ' 400 ' $T/ws
$WS 127.0.0.1 $PORT /v1/capsules/cl-0000000000000000000000000/exec/stream $KEY '{"type":"start","cmd":"ls"}' >$T/ws
check "ws: unknown capsule -> error after 101" sh -c "grep -q ' 101 ' $T/ws && grep -Fq '\"data\":\"sandbox not found\"' $T/ws"

req POST $C/exec -d '{"cmd":"sh","args":["-c","sleep 3; echo late; exit 5"],"background":true,"tag":"att"}'
$WS 127.0.0.1 $PORT $C/processes/att/stream $KEY >$T/ws
cp $T/ws $T/body; check "process stream: attach by tag, output after attach, exit" sh -c "grep -Eq '^msg: \{\"type\":\"start\",\"pid\":[1-9]' $T/ws && grep -Fxq 'msg: {\"type\":\"stdout\",\"data\":\"late\\n\"}' $T/ws && grep -Fxq 'msg: {\"type\":\"exit\",\"exit_code\":5}' $T/ws"
$WS 127.0.0.1 $PORT $C/processes/nosuch/stream $KEY >$T/ws
check "process stream: unknown process closes silently" sh -c "grep -q ' 101 ' $T/ws && ! grep -q '^msg:' $T/ws"
$WS 127.0.0.1 $PORT /api$C/exec/stream $KEY '{"type":"start","cmd":"true"}' >$T/ws
check "/api prefix accepted (hosted base URL)" grep -Fxq 'msg: {"type":"exit","exit_code":0}' $T/ws

# ---- keep-alive, snapshots, inactivity auto-pause ----
n=$(curl -s -v -H "X-API-Key: $KEY" $B/v1/capsules $B/health -o /dev/null -o /dev/null 2>&1 | grep -c 'Re-using existing connection')
check "HTTP keep-alive between requests" [ "$n" = 1 ]
req POST $C/files/write -F path=/root/snapfile -F file=@$T/h.txt
req POST /v1/snapshots -d "{\"sandbox_id\":\"$ID\",\"name\":\"tsnap\"}"
check "snapshot: 201 shape" [ "$code" = 201 -a "$(jqb '.name,.type,.platform' | tr '\n' ' ')" = "tsnap snapshot false " ]
req GET $C
check "snapshot leaves the capsule paused" [ "$(jqb .status)" = paused ]
req POST /v1/snapshots -d "{\"sandbox_id\":\"$ID\",\"name\":\"tsnap\"}"
check "snapshot name taken: 409" [ "$code" = 409 -a "$(jqb .error.code)" = template_name_taken ]
req GET /v1/snapshots
check "snapshots list: minimal (platform) + tsnap" [ "$(jqb 'map(.name)|sort|join(",")')" = "minimal,tsnap" ]
req POST /v1/capsules -d '{"template":"tsnap","timeout_sec":2}'
ID2=$(jqb .id)
check "create from snapshot" [ "$code" = 201 -a "$(jqb .template)" = tsnap ]
req POST /v1/capsules/$ID2/files/read -d '{"path":"/root/snapfile"}'
check "snapshot carried the file" [ "$(cat $T/body)" = hello ]
# timeout_sec 2: paused within the 2 s plus the server's check interval
until_ok 15 capsule_is $ID2 paused || true
check "timeout_sec auto-pauses an idle capsule" [ "$(jqb .status)" = paused ]
req DELETE /v1/snapshots/tsnap
check "snapshot in use: 409" [ "$code" = 409 ]
req DELETE /v1/capsules/$ID2
req DELETE /v1/snapshots/tsnap
check "snapshot delete: 204" [ "$code" = 204 ]
req POST $C/resume

# ---- lifecycle ----
req POST $C/resume
check "resume running: 409" [ "$code" = 409 -a "$(jqb .error.message)" = "resource is not paused" ]
req POST $C/pause
check "pause: 200 paused" [ "$code" = 200 -a "$(jqb .status)" = paused ]
req POST $C/exec -d '{"cmd":"true"}'
check "exec paused: 409 with status" [ "$code" = 409 -a "$(jqb .error.message)" = "sandbox is not running (status: paused)" ]
req POST $C/files/read -d '{"path":"/etc/hostname"}'
check "files paused: 409" [ "$code" = 409 -a "$(jqb .error.message)" = "sandbox is not running" ]
req POST $C/ping
check "ping paused: 409" [ "$code" = 409 ]
req POST $C/resume
check "resume: 200 running" [ "$code" = 200 -a "$(jqb .status)" = running ]
req POST $C/ping
check "ping: 204" [ "$code" = 204 -a ! -s $T/body ]
req DELETE $C
check "destroy: 204" [ "$code" = 204 ]
# a paused (frozen) capsule leaves no process, mount or cgroup behind
req POST /v1/capsules -d '{}'
ID3=$(jqb .id)
req POST /v1/capsules/$ID3/exec -d '{"cmd":"sleep","args":["600"],"background":true}'
req POST /v1/capsules/$ID3/pause
check "paused capsule for destroy" [ "$(jqb .status)" = paused ]
check "... its init is alive" [ -n "$(live_init $ID3)" ]
req DELETE /v1/capsules/$ID3
check "destroy paused: 204" [ "$code" = 204 ]
until_ok 10 no_live_init $ID3 || true
check "destroy paused: no live sandbox-init left" [ -z "$(live_init $ID3)" ]
check "destroy paused: no overlay mount left" sh -c "! grep -q '$DATA/sandboxes/$ID3' /proc/mounts"
check "destroy paused: no freezer cgroup left" sh -c "! ls -d /sys/fs/cgroup/freezer/sbxfs/*-$ID3 2>/dev/null"
req GET /v1/capsules/$ID3
check "destroy paused: stopped" [ "$(jqb .status)" = stopped ]
req GET $C
check "get after destroy: stopped" [ "$code" = 200 -a "$(jqb .status)" = stopped ]
req GET /v1/capsules
check "list hides stopped" [ "$(jqb "map(select(.id==\"$ID\"))|length")" = 0 ]
req DELETE /v1/capsules/cl-0000000000000000000000000
check "destroy unknown: 404 resource not found" [ "$code" = 404 -a "$(jqb .error.message)" = "resource not found" ]

# ---- restart keeps records, SIGTERM stops cleanly ----
kill -TERM $SPID
i=0
while kill -0 $SPID 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "SIGTERM stops the server" sh -c "! kill -0 $SPID 2>/dev/null"
wait $SPID 2>/dev/null
SPID=
start_server
check "second start prints no key" sh -c "! grep -q wrn_ $T/out"
req GET $C
check "records survive a restart" [ "$code" = 200 -a "$(jqb .status)" = stopped ]

kill -TERM $SPID; wait $SPID 2>/dev/null; SPID=
check "no sanitizer reports in the server log" sh -c "! grep -Eq 'Sanitizer|runtime error' $T/err"
grep -E -A30 'Sanitizer|runtime error' $T/err | head -60
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
