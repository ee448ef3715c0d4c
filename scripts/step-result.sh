#!/usr/bin/env bash
# step-result.sh: an agent reports the result of its step in a workflow run to atomizer-hq.
#
# The hooks of OpenClaw 2026.2.12 say nothing when a run ends, and 2026.9.6's say how it ended but
# never what the agent found; a skill that ends with this script hands atomizer-hq both. The caller
# is whoever ATOMIZER_API_TOKEN belongs to: the step's own agent (or an operator). Needs bash, curl
# and python3 (no jq).
set -euo pipefail

readonly PROG="${0##*/}"
readonly DEFAULT_API_URL="http://127.0.0.1:18790"
readonly SYNOPSIS="$PROG <run> <step>[#<attempt>] ok|failed [\"<output>\" | -]"

usage() {
  cat <<EOF
usage: $SYNOPSIS

Report the result of step <step> of workflow run <run> (W-3 or 3): ok when it is done, failed when
it cannot be (the output then says why). Write the step as the message of the hook names it
(mesh#2: step mesh, attempt 2), so a late result of an earlier attempt is refused, not counted. The output is the text later steps receive; "-" reads it
from standard input (for long answers), and it may be left out.

environment:
  ATOMIZER_API_TOKEN   your loopback API token (required)
  ATOMIZER_API_URL     the API's address (default $DEFAULT_API_URL)

exit status: 0 recorded, 1 refused (not your step, not running any more) or failed,
             2 bad usage or configuration
EOF
}

die() {  # die EXIT_CODE MESSAGE
  printf '%s: %s\n' "$PROG" "$2" >&2
  exit "$1"
}

usage_error() {
  printf '%s: %s\nusage: %s\n       (%s --help for more)\n' "$PROG" "$1" "$SYNOPSIS" "$PROG" >&2
  exit 2
}

case "${1:-}" in -h | --help)
  usage
  exit 0
  ;;
esac
(($# >= 3)) || usage_error "missing $( (($# == 0)) && echo 'the run, the step and the outcome' || ( (($# == 1)) && echo 'the step and the outcome' || echo 'the outcome (ok or failed)'))"
(($# <= 4)) || usage_error "too many arguments ($#); put the output in quotes: \"...\", or pipe it with -"
run="$1"
step="$2"
outcome="$3"
[[ $run =~ ^[Ww]?-?[0-9]{1,12}$ ]] || usage_error "'$run' is not a run; write W-3 or 3"
attempt=""
if [[ $step =~ ^(.*)#([1-9][0-9]{0,8})$ ]]; then
  step="${BASH_REMATCH[1]}"
  attempt="${BASH_REMATCH[2]}"
fi
[[ $step =~ ^[a-z][a-z0-9_-]{0,31}$ ]] || usage_error "'$step' is not a step id (lower-case letters, digits, - or _, then #attempt)"
case "$outcome" in
  ok | done | succeeded) ok=true ;;
  failed | fail | error) ok=false ;;
  *) usage_error "'$outcome' is not an outcome; write ok or failed" ;;
esac
if (($# == 4)) && [[ $4 == - ]]; then
  output="$(cat)"
else
  output="${4:-}"
fi

command -v curl >/dev/null 2>&1 || die 2 "curl is not installed; it is needed to call the atomizer-hq API"
command -v python3 >/dev/null 2>&1 || die 2 "python3 is not installed; it is needed to read and write JSON"
token="${ATOMIZER_API_TOKEN:-}"
[[ -n $token ]] || die 2 "ATOMIZER_API_TOKEN is not set: export this agent's loopback API token (the one \
atomizer-hq has as ATOMIZER_API_TOKEN_<AGENT> or in ATOMIZER_API_TOKENS)"
[[ $token != *[[:space:][:cntrl:]]* ]] || die 2 "ATOMIZER_API_TOKEN contains whitespace; copy the token alone"
api_url="${ATOMIZER_API_URL:-$DEFAULT_API_URL}"
api_url="${api_url%/}"

# JSON built by python3 from stdin and argv, never by pasting strings.
build_body='
import json, sys
try:
    output = sys.stdin.buffer.read().decode("utf-8")
except UnicodeDecodeError:
    sys.exit("the output is not valid UTF-8 text")
body = {"ok": sys.argv[1] == "true", "output": output}
if sys.argv[2]:
    body["attempt"] = int(sys.argv[2])
json.dump(body, sys.stdout)
'
body=$(printf '%s' "$output" | python3 -c "$build_body" "$ok" "$attempt") || die 2 "cannot build the request"

rc=0
reply=$(
  printf '%s' "$body" | curl --silent --noproxy '*' --connect-timeout 5 --max-time 60 \
    --request POST --url "$api_url/v1/workflow-runs/$run/steps/$step/result" \
    --header @<(printf 'Authorization: Bearer %s\n' "$token") \
    --header 'Content-Type: application/json' --header 'Accept: application/json' \
    --user-agent 'step-result.sh (atomizer-hq)' \
    --data-binary @- --write-out '\n%{http_code}'
) || rc=$?
if ((rc != 0)); then
  case $rc in
    6) why="cannot resolve the host" ;;
    7) why="connection refused" ;;
    28) why="no answer in time" ;;
    *) why="curl exit code $rc" ;;
  esac
  printf 'failed: cannot reach the atomizer-hq API at %s (%s); is atomizer-hq running, and ATOMIZER_API_URL right?\n' \
    "$api_url" "$why" >&2
  exit 1
fi
http_status="${reply##*$'\n'}"
answer="${reply%$'\n'*}"

render='
import json, sys

prog, code, run, step, url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


def done(line, exit_code):
    print(line, file=sys.stdout if exit_code == 0 else sys.stderr)
    sys.exit(exit_code)


try:
    answer = json.loads(sys.stdin.buffer.read())
except ValueError:
    answer = None
if not isinstance(answer, dict):
    done(f"failed: {url} answered HTTP {code}, but not as atomizer-hq does; is ATOMIZER_API_URL right?", 1)
detail = str(answer.get("detail") or answer.get("error") or "no detail given")
status = answer.get("status")
if code == 200:
    done(f"recorded: {step} of {run} is {status}", 0)
if code in (403, 409):
    done(f"refused: {detail}", 1)
if code == 401:
    done(f"{prog}: the API did not accept ATOMIZER_API_TOKEN: {detail}", 2)
if code in (400, 404, 413):
    done(f"{prog}: {detail}", 2)
done(f"failed: HTTP {code}: {detail}", 1)
'
printf '%s' "$answer" | python3 -c "$render" "$PROG" "$http_status" "$run" "$step" "$api_url"
