# The users' part of scripts/multihost.sh (sourced by it, not run alone): real `peer` processes
# on the client hosts, sharing across hosts, a cut-off viewer and a whole-cloud kill -9.
#
# Users are named hH-uK (user K on client host H). User K on host H shares a photo; user K on
# the next host (H+1, the last host's viewers on host 1) is his viewer, so every share, preview,
# request, approval, copy and view crosses hosts. The story, with a line per step:
#   1. every peer starts on its host, listening on every interface, and registers the host's
#      address (checked in the directory: no 127.0.0.1, no 0.0.0.0), named by its host's
#      config on odd hosts, found on the route to the cloud on even ones;
#   2. per pair, at once: share; the viewer fetches the owner's previews from the owner's peer;
#      asks for GRANT views; the owner approves; the copy reaches the viewer; the viewer views
#      it to zero and once more (the default image);
#   3. every node is killed with SIGKILL and restarted: each share is still in the directory
#      and each spent view still spent (one more view shows the default image), or it counts
#      as lost;
#   4. client host 2 is cut off (nftables drops everything on its interface); the owners of
#      its viewers raise their quotas; the cut-off viewers have nothing yet; the cut heals and
#      each cut-off viewer receives his new quota (from his mailbox) and views it to zero.
# Any overdraw (an image shown beyond what the ledger granted) or loss makes the run fail.
#
# Uses from the caller: BIN, RUN_DIR, OUT, NS_PREFIX, SUBNET, CLIENT_BASE, HOSTS, NODES, USERS,
# ROOT, say, problems, start_node, restart_cloud.

GRANT=2       # views a viewer asks for
RAISED=3      # the quota an owner sets while his viewer is cut off
STEP_WAIT=60  # bound, in seconds, on one step's waiting (a failover or a restart inside it)
CUT_HOST=2    # the client host that is cut off

user_name() { echo "h$1-u$2"; }
user_dir() { echo "$RUN_DIR/hosts/client$1/$2"; }
host_config() { echo "$RUN_DIR/hosts/client$1/cloud.toml"; }
password_of() { echo "pw-$1-$RUN_TAG"; }

# pcmd HOST USER ARGS...: a `peer` subcommand of USER's running peer, on USER's host, JSON out.
pcmd() {
    local h=$1 u=$2
    shift 2
    IMGCLOUD_PASSWORD=$(password_of "$u") RUST_LOG=warn timeout 60 \
        ip netns exec "${NS_PREFIX}client$h" "$BIN/peer" --user "$u" --dir "$(user_dir "$h" "$u")" \
        --config "$(host_config "$h")" --json "$@" 2>>"$OUT/users/$u.err" </dev/null
}

# until_ok SECONDS COMMAND...: runs COMMAND every 0.5 s until it succeeds or SECONDS pass.
until_ok() {
    local limit=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS >= limit)) && return 1
        sleep 0.5
    done
}

# pcmd_retry HOST USER ARGS...: pcmd, again every second until it succeeds (a failover or
# an outage may refuse a call for a while), for at most STEP_WAIT seconds; its output.
pcmd_retry() {
    local limit=$((SECONDS + STEP_WAIT)) out
    until out=$(pcmd "$@"); do
        ((SECONDS >= limit)) && return 1
        sleep 1
    done
    printf '%s\n' "$out"
}

start_peer() { # HOST USER
    local h=$1 u=$2
    run mkdir -p "$(user_dir "$h" "$u")"
    IMGCLOUD_PASSWORD=$(password_of "$u") RUST_LOG="${RUST_LOG:-warn}" \
        ip netns exec "${NS_PREFIX}client$h" "$BIN/peer" --user "$u" --dir "$(user_dir "$h" "$u")" \
        --config "$(host_config "$h")" --parent-watch \
        <"$RUN_DIR/lifeline" >"$OUT/users/$u.log" 2>&1 3>&- 9>&- &
    PEER_PIDS+=($!)
}

# views HOST USER IMAGE COUNT TAG: views IMAGE COUNT times; prints "shown default".
views() {
    local h=$1 u=$2 image=$3 count=$4 tag=$5 i r shown=0 dflt=0
    for ((i = 1; i <= count; i++)); do
        r=$(pcmd_retry "$h" "$u" view "$image" -o "$RUN_DIR/users/$u-$tag-$i.png" | jq -r .shown)
        case "$r" in
            image) shown=$((shown + 1)) ;;
            default) dflt=$((dflt + 1)) ;;
            *) echo "fail=view $tag $i gave '$r'" >>"$RUN_DIR/users/$u.res" ;;
        esac
    done
    echo "$shown $dflt"
}

has_copy() { # HOST USER IMAGE VIEWS: the user's copy of IMAGE has VIEWS views left
    pcmd "$1" "$2" images | jq -e --arg id "$3" --argjson n "$4" \
        'any(.[]; .id == $id and .owner != null and .views_left == $n)'
}

# Step 2 for one pair; its results go to RUN_DIR/users/VIEWER.res as key=value lines.
pair_flow() { # OWNER_HOST OWNER VIEWER_HOST VIEWER
    local ho=$1 o=$2 hv=$3 v=$4 res="$RUN_DIR/users/$4.res" id req n sd
    fail() { echo "fail=$*" >>"$res"; }
    id=$(pcmd_retry "$ho" "$o" share "$PHOTO" --name "photo-$o" | jq -r '.id // empty')
    [[ -n $id ]] || { fail "share by $o"; return; }
    echo "image=$id" >>"$res"
    n=$(pcmd_retry "$hv" "$v" previews "$o" -o "$RUN_DIR/users/$v-previews" | jq 'length')
    [[ ${n:-0} -ge 1 ]] || { fail "previews of $o fetched by $v"; return; }
    echo "previews=$n" >>"$res"
    req=$(pcmd_retry "$hv" "$v" request "$o" "photo-$o" --views "$GRANT" | jq -r '.id // empty')
    [[ -n $req ]] || { fail "request from $v to $o"; return; }
    until_ok "$STEP_WAIT" pending_at "$ho" "$o" "$req" || { fail "request $req never reached $o"; return; }
    pcmd_retry "$ho" "$o" approve "$req" >/dev/null || { fail "approval of $req by $o"; return; }
    until_ok "$STEP_WAIT" has_copy "$hv" "$v" "$id" "$GRANT" \
        || { fail "no copy of $id with $GRANT views at $v"; return; }
    echo "copy=1" >>"$res"
    read -r sd <<<"$(views "$hv" "$v" "$id" $((GRANT + 1)) first)"
    echo "granted=$GRANT" >>"$res"
    echo "shown=${sd% *}" >>"$res"
    echo "default=${sd#* }" >>"$res"
}

pending_at() { # HOST OWNER REQ
    pcmd "$1" "$2" requests | jq -e --arg id "$3" 'any(.[]; .id == $id and .state == "pending")'
}

# key USER KEY: the value of KEY in USER's result file (the last one), or empty.
key() { awk -F= -v k="$2" '$1 == k { v = substr($0, length(k) + 2) } END { print v }' "$RUN_DIR/users/$1.res" 2>/dev/null; }
add_res() { echo "$2=$3" >>"$RUN_DIR/users/$1.res"; }

users_phase() {
    local h k u o v ho hv addr want online lines t0 pids=() pid n
    USERS_STARTED=$SECONDS
    RUN_TAG=$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')
    PHOTO="$ROOT/assets/sample.png"
    PEER_PIDS=()
    run mkdir -p "$OUT/users" "$RUN_DIR/users"
    rm -f "$OUT"/users/*
    # Each host gets the users' config (the nodes' addresses, no secret) and its users' folders.
    "$BIN/client" user-config --config "$CONFIG" >"$RUN_DIR/users.toml" || die "client user-config failed"
    grep -q "$SECRET" "$RUN_DIR/users.toml" && die "the users' config holds the secret"
    # Odd hosts' copies name the host's address ([peer] advertise); even hosts' peers find it
    # on the route to the cloud: both ways are checked in the directory.
    for ((h = 1; h <= HOSTS; h++)); do
        run mkdir -p "$RUN_DIR/hosts/client$h"
        run cp "$RUN_DIR/users.toml" "$(host_config "$h")"
        if ((h % 2 == 1)); then
            printf '\n[peer]\nadvertise = "%s"\n' "$SUBNET.$((CLIENT_BASE + h))" >>"$(host_config "$h")"
        fi
    done

    say "users: $USERS per client host, $((USERS * HOSTS)) in all, starting their peers"
    for ((h = 1; h <= HOSTS; h++)); do
        for ((k = 1; k <= USERS; k++)); do start_peer "$h" "$(user_name "$h" "$k")"; done
    done
    # Step 1: every peer online at its host's address.
    for ((h = 1; h <= HOSTS; h++)); do
        for ((k = 1; k <= USERS; k++)); do
            u=$(user_name "$h" "$k")
            until_ok "$STEP_WAIT" grep -q "online at" "$OUT/users/$u.log" \
                || { problems+=("$u's peer did not come online in $STEP_WAIT s (see $OUT/users/$u.log)"); return; }
        done
    done
    online=$(pcmd_retry 1 "$(user_name 1 1)" online) || { problems+=("'peer online' failed"); return; }
    echo "$online" >"$OUT/users/directory.json"
    ADDR_OK=0
    for ((h = 1; h <= HOSTS; h++)); do
        want="$SUBNET.$((CLIENT_BASE + h)):"
        for ((k = 1; k <= USERS; k++)); do
            u=$(user_name "$h" "$k")
            addr=$(jq -r --arg u "$u" '.[] | select(.user == $u and .online) | .addr // empty' <<<"$online")
            if [[ $addr == "$want"* ]]; then
                ADDR_OK=$((ADDR_OK + 1))
            else
                problems+=("$u's directory address is '${addr:-none}', not on its host $want*")
            fi
        done
    done
    EXAMPLE_ADDR=$(jq -r --arg u "$(user_name 2 1)" '.[] | select(.user == $u) | "\(.user) at \(.addr)"' <<<"$online")
    say "every peer online; directory: $EXAMPLE_ADDR, ..."

    # Step 2: every pair at once.
    say "sharing across hosts: $((USERS * HOSTS)) owners, each with a viewer on the next host"
    for ((h = 1; h <= HOSTS; h++)); do
        hv=$((h % HOSTS + 1))
        for ((k = 1; k <= USERS; k++)); do
            pair_flow "$h" "$(user_name "$h" "$k")" "$hv" "$(user_name "$hv" "$k")" &
            pids+=($!)
        done
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    say "shared, approved, copied and viewed to zero: $(cat "$RUN_DIR"/users/*.res | grep -c '^copy=1') copies"

    # Step 3: the whole cloud, kill -9 and restart.
    say "killing every node with SIGKILL and restarting them"
    restart_cloud || { problems+=("the cloud did not come back after kill -9"); return; }
    LOST=0
    online=$(pcmd_retry 1 "$(user_name 1 1)" online) || { problems+=("'peer online' failed after the restart"); return; }
    for ((h = 1; h <= HOSTS; h++)); do
        hv=$((h % HOSTS + 1))
        for ((k = 1; k <= USERS; k++)); do
            o=$(user_name "$h" "$k") v=$(user_name "$hv" "$k")
            id=$(key "$v" image)
            [[ -n $id && $(key "$v" copy) == 1 ]] || continue
            if ! jq -e --arg u "$o" --arg id "$id" 'any(.[]; .user == $u and any(.shared[]; .id == $id))' <<<"$online" >/dev/null; then
                LOST=$((LOST + 1))
                problems+=("after the restart, $o's share $id is not in the directory")
            fi
            # Every view was spent before the kill: one more shows the default image.
            read -r sd <<<"$(views "$hv" "$v" "$id" 1 after-restart)"
            add_res "$v" shown_after_restart "${sd% *}"
            add_res "$v" default_after_restart "${sd#* }"
            if [[ ${sd% *} != 0 ]]; then
                LOST=$((LOST + 1))
                problems+=("after the restart, $v's spent views of $id were not all spent")
            fi
        done
    done

    # Step 4: client host CUT_HOST is cut off; the owners of its viewers raise their quotas.
    local cut_from=$(((CUT_HOST + HOSTS - 2) % HOSTS + 1)) cut_ns="${NS_PREFIX}client$CUT_HOST"
    say "cutting off client host $CUT_HOST (nftables); owners on host $cut_from raise their viewers' quotas to $RAISED"
    ip netns exec "$cut_ns" nft -f - <<'EOF' || { problems+=("nft could not cut the host off"); return; }
table inet imgm_cut {
    chain in { type filter hook input priority 0; policy accept; iifname "eth0" drop; }
    chain out { type filter hook output priority 0; policy accept; oifname "eth0" drop; }
}
EOF
    CUT_USERS=0 CUT_EARLY=0 QUOTA_MAX=0
    for ((k = 1; k <= USERS; k++)); do
        o=$(user_name "$cut_from" "$k") v=$(user_name "$CUT_HOST" "$k")
        id=$(key "$v" image)
        [[ -n $id && $(key "$v" copy) == 1 ]] || continue
        t_quota=$EPOCHREALTIME
        if pcmd_retry "$cut_from" "$o" quota "photo-$o" "$v=$RAISED" >"$RUN_DIR/users/$v.quota"; then
            QUOTA_MAX=$(awk -v a="$t_quota" -v b="$EPOCHREALTIME" -v m="$QUOTA_MAX" \
                'BEGIN { d = b - a; printf "%.1f", (d > m ? d : m) }')
            CUT_USERS=$((CUT_USERS + 1))
            add_res "$v" raised 1
            # The viewer's host is cut off: nothing can have reached him.
            has_copy "$CUT_HOST" "$v" "$id" "$RAISED" >/dev/null 2>&1 && CUT_EARLY=$((CUT_EARLY + 1))
        else
            problems+=("$o could not set $v's quota while $v was cut off")
        fi
    done
    ip netns exec "$cut_ns" nft delete table inet imgm_cut || problems+=("nft could not heal the cut")
    t0=$SECONDS
    CUT_DELIVERED=0 CUT_SECONDS=0
    for ((k = 1; k <= USERS; k++)); do
        v=$(user_name "$CUT_HOST" "$k")
        [[ $(key "$v" raised) == 1 ]] || continue
        id=$(key "$v" image)
        if until_ok "$STEP_WAIT" has_copy "$CUT_HOST" "$v" "$id" "$RAISED"; then
            CUT_DELIVERED=$((CUT_DELIVERED + 1))
            CUT_SECONDS=$((SECONDS - t0))
            read -r sd <<<"$(views "$CUT_HOST" "$v" "$id" $((RAISED + 1)) after-heal)"
            add_res "$v" granted_after_heal "$RAISED"
            add_res "$v" shown_after_heal "${sd% *}"
            add_res "$v" default_after_heal "${sd#* }"
        else
            problems+=("$v never received the quota raised while he was cut off")
        fi
    done
    USERS_TOOK=$((SECONDS - USERS_STARTED))
    UNREACHABLE=$(cat "$OUT"/users/*.log 2>/dev/null | grep -c "the cloud cannot reach this peer")
    WAITED=$(cat "$OUT"/users/*.log 2>/dev/null | grep -c "waiting for the cloud")
    ANSWERED=$(cat "$OUT"/users/*.log 2>/dev/null | grep -c "the cloud answers again")
}

users_summary() {
    local f u sh gr df shown=0 dflt=0 over=0 copies=0 shares=0 fails=0
    for f in "$RUN_DIR"/users/*.res; do
        [[ -f $f ]] || continue
        u=$(basename "$f" .res)
        [[ -n $(key "$u" image) ]] && shares=$((shares + 1))
        [[ $(key "$u" copy) == 1 ]] && copies=$((copies + 1))
        for phase in "" _after_restart _after_heal; do
            sh=$(key "$u" "shown$phase") df=$(key "$u" "default$phase")
            gr=$(key "$u" "granted$phase")
            shown=$((shown + ${sh:-0})) dflt=$((dflt + ${df:-0}))
            ((${sh:-0} > ${gr:-0})) && over=$((over + ${sh:-0} - ${gr:-0}))
        done
        while IFS= read -r line; do
            fails=$((fails + 1))
            problems+=("${line#fail=}")
        done < <(grep '^fail=' "$f")
    done
    echo "users' part (${USERS_TOOK:-?} s): $((USERS * HOSTS)) peers on $HOSTS client hosts, $ADDR_OK registered their host's address (e.g. $EXAMPLE_ADDR), $UNREACHABLE unreachable from the cloud"
    echo "sharing: $shares shares, $copies copies across hosts, views shown $shown, default images $dflt, overdraws $over"
    echo "whole-cloud kill -9 and restart: lost after restart $LOST"
    echo "cut-off viewers on host $CUT_HOST: $CUT_DELIVERED of $CUT_USERS received the quota raised during the cut, within ${CUT_SECONDS} s of the heal (before it: $CUT_EARLY; the slowest 'peer quota' took $QUOTA_MAX s); peers that waited for the cloud: $WAITED, heard it again: $ANSWERED"
    ((UNREACHABLE == 0)) || problems+=("$UNREACHABLE peers said the cloud cannot reach them")
    ((over == 0)) || problems+=("$over views shown beyond the ledger's grants (overdraw)")
    ((CUT_EARLY == 0)) || problems+=("$CUT_EARLY cut-off viewers had the new quota before the heal: the cut did not hold")
    ((fails == 0 && copies == USERS * HOSTS)) || problems+=("$copies of $((USERS * HOSTS)) pairs completed")
}
