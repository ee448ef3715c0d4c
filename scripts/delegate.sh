#!/usr/bin/env bash
# delegate.sh: hand work to another agent through atomizer-hq's loopback API.
#
# A drop-in for the team's old script (same arguments). The old one POSTed straight to the other
# gateway's /hooks/agent with the shared hooks token; this one asks atomizer-hq, which checks the
# caller's authority, keeps the audit trail, normalizes the delivery target and retries while an agent
# restarts. The caller is whoever ATOMIZER_API_TOKEN belongs to. Needs bash, curl and python3 (no jq).
set -euo pipefail

readonly PROG="${0##*/}"
readonly DEFAULT_API_URL="http://127.0.0.1:18790"
readonly SYNOPSIS="$PROG <agent> \"<instruction>\" [--channel ID] [--deliver|--no-deliver] [--parent D-12]"

usage() {
  cat <<EOF
usage: $SYNOPSIS

Delegate <instruction> to <agent> through the atomizer-hq loopback API, as the agent (or person)
whose token is in ATOMIZER_API_TOKEN. atomizer-hq decides whether you may, and says who could if not.

options:
  --channel ID    post the agent's answer in this Discord channel: an id (sent as channel:<ID>),
                  or channel:<id>, <#id>, #name. Default: atomizer-hq's technical channel.
  --deliver       post the agent's answer in Discord (the default)
  --no-deliver    let the agent work without posting its answer
  --parent D-12   this is part of the delegation you are working on (your hook message ends with its id):
                  recorded as its child in the chain. Only a delegation you received.
  -h, --help      show this help
  --              end of options (for an instruction that starts with --)

environment:
  ATOMIZER_API_TOKEN   your loopback API token (required)
  ATOMIZER_API_URL     the API's address (default $DEFAULT_API_URL)

exit status: 0 accepted (or queued: atomizer-hq retries while the agent restarts),
             1 refused or failed, 2 bad usage or configuration
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

# --- arguments ------------------------------------------------------------------------------------

positional=()
channel=""
channel_given=false
deliver=true
parent=""
while (($#)); do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --channel)
      if (($# < 2)) || [[ $2 == --* ]]; then usage_error "--channel needs a channel id"; fi
      channel="$2"
      channel_given=true
      shift
      ;;
    --channel=*)
      channel="${1#--channel=}"
      channel_given=true
      ;;
    --parent)
      if (($# < 2)) || [[ $2 == --* ]]; then usage_error "--parent needs a delegation id, e.g. --parent D-12"; fi
      parent="$2"
      shift
      ;;
    --parent=*)
      parent="${1#--parent=}"
      [[ -n ${parent//[[:space:]]/} ]] || usage_error "--parent needs a delegation id, e.g. --parent D-12"
      ;;
    --deliver) deliver=true ;;
    --no-deliver) deliver=false ;;
    --)
      shift
      positional+=("$@")
      break
      ;;
    --*) usage_error "unknown option $1" ;;
    *) positional+=("$1") ;;
  esac
  shift
done

case ${#positional[@]} in
  0) usage_error "missing the agent and the instruction" ;;
  1) usage_error "missing the instruction" ;;
  2) ;;
  *) usage_error "too many arguments (${#positional[@]}); put the instruction in quotes: \"...\"" ;;
esac
agent="${positional[0]}"
message="${positional[1]}"
[[ -n ${agent//[[:space:]]/} ]] || usage_error "the agent name is empty"
if [[ $channel_given == true ]]; then
  [[ -n ${channel//[[:space:]]/} ]] || usage_error "--channel needs a channel id"
  # Silently dropping a channel someone asked for is how answers got lost before: say so instead.
  [[ $deliver == true ]] || usage_error "--channel and --no-deliver contradict each other; drop one"
fi

# --- configuration --------------------------------------------------------------------------------

command -v curl >/dev/null 2>&1 || die 2 "curl is not installed; it is needed to call the atomizer-hq API"
command -v python3 >/dev/null 2>&1 || die 2 "python3 is not installed; it is needed to read and write JSON"
token="${ATOMIZER_API_TOKEN:-}"
[[ -n $token ]] || die 2 "ATOMIZER_API_TOKEN is not set: export this agent's loopback API token (the one \
atomizer-hq has as ATOMIZER_API_TOKEN_<AGENT> or in ATOMIZER_API_TOKENS)"
# A newline would let the token smuggle in a second header; no real token has any whitespace.
[[ $token != *[[:space:][:cntrl:]]* ]] || die 2 "ATOMIZER_API_TOKEN contains whitespace; copy the token alone"
api_url="${ATOMIZER_API_URL:-$DEFAULT_API_URL}"
api_url="${api_url%/}"

# --- the request ----------------------------------------------------------------------------------

# The JSON is built by python3 from stdin and argv, never by pasting strings: any quote, backslash,
# newline or $(...) in the instruction arrives as written.
build_body='
import json, sys
agent, channel, deliver, parent = sys.argv[1], sys.argv[2].strip(), sys.argv[3] == "true", sys.argv[4].strip()
try:
    message = sys.stdin.buffer.read().decode("utf-8")
except UnicodeDecodeError:
    sys.exit("the instruction is not valid UTF-8 text")
body = {"to": agent.strip(), "message": message, "deliver": deliver}
if parent:
    body["parent"] = parent
if deliver and channel:
    # A bare id was the original bug (OpenClaw guessed user or channel): --channel means a channel.
    body["target"] = "channel:" + channel if channel.isascii() and channel.isdigit() else channel
json.dump(body, sys.stdout)
'
body=$(printf '%s' "$message" | python3 -c "$build_body" "$agent" "$channel" "$deliver" "$parent") || die 2 "cannot build the request"

rc=0
# The token goes in a header read from a file descriptor, so it never shows in `ps`; --noproxy keeps
# it off any proxy the environment names.
reply=$(
  printf '%s' "$body" | curl --silent --noproxy '*' --connect-timeout 5 --max-time 60 \
    --request POST --url "$api_url/v1/delegations" \
    --header @<(printf 'Authorization: Bearer %s\n' "$token") \
    --header 'Content-Type: application/json' --header 'Accept: application/json' \
    --user-agent 'delegate.sh (atomizer-hq)' \
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

# --- the answer -----------------------------------------------------------------------------------

render='
import json, sys
from datetime import datetime, timezone

prog, code, agent, url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


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
if code == 202:
    ident, status, to = answer.get("id"), answer.get("status"), answer.get("agent") or agent
    run_id, error = answer.get("run_id"), answer.get("last_error")
    parent = answer.get("parent")
    if parent:
        ident = f"{ident} under {parent}"
    if status == "accepted":
        done(f"accepted by {to} ({ident}, runId {run_id})", 0)
    if status in ("queued", "sending"):
        reason = error or "not sent yet"
        try:
            left = datetime.fromisoformat(answer["expires_at"]) - datetime.now(timezone.utc)
            retry = f"will retry for {max(1, round(left.total_seconds() / 60))} min"
        except (KeyError, TypeError, ValueError):
            retry = "will retry"
        done(f"queued: {to} cannot take it now: {reason}; {retry} ({ident})", 0)
    error = error or "no reason given"
    done(f"{status}: {ident} to {to}: {error}", 1)
if code in (403, 409):
    done(f"refused: {detail}", 1)
if code == 401:
    done(f"{prog}: the API did not accept ATOMIZER_API_TOKEN: {detail}", 2)
if code in (400, 404, 413):
    done(f"{prog}: {detail}", 2)
done(f"failed: HTTP {code}: {detail}", 1)
'
printf '%s' "$answer" | python3 -c "$render" "$PROG" "$http_status" "$agent" "$api_url"
