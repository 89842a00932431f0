//! Linearizability of the directory under node failures, checked on real histories.
//!
//! Three real `cloud-node` processes; six client tasks each send random operations (register a
//! user at a fresh address, unregister it, read the whole directory) to a random node, and
//! record when each call began and ended on one monotonic clock, what it returned, and the Unix
//! milliseconds around it. Mid-history the Raft leader is SIGKILLed and restarted (scenario a),
//! or SIGSTOPped and resumed (scenario b: a true cut-off from the majority). After the history,
//! every node is read once more. Each user's history is then checked by a Wing–Gong/Lowe (WGL)
//! search with memoisation, implemented below and tested against a brute-force checker, against
//! a sequential specification of one user's record:
//!
//! - a write carries its signed sequence number: it is applied (200) iff the number is above the
//!   last applied one, otherwise refused (403) and nothing changes; a write that ended in 503, a
//!   timeout or a broken connection may or may not have happened (it may be linearized anywhere
//!   after its call, or not at all); one that could not even connect did not happen;
//! - a read shows the user's `addr` while the lease of its last registration holds, and
//!   `last_seen`, the proposer's clock stamped on the last applied write. The stamp is taken at
//!   the node that received the write, so it lies between the write's call and its answer (Unix
//!   ms); the reader's clock lies between the read's call and answer; a read may show the address
//!   iff `last_seen + lease > now` is possible, and may hide it iff `last_seen + lease <= now` is.
//!
//! Linearizability is compositional, so each user (a separate key) is checked on its own; a
//! read of the directory counts as one read of every user.
//!
//! Why not `stateright`'s `LinearizabilityTester`: its search has no memoisation (it re-explores
//! every interleaving after a wrong early choice), which is exponential on histories where an
//! operation spans seconds (a request to a stopped node) while the other tasks complete dozens.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgcloud::ids::NodeId;
use imgcloud::sharing::{unix_millis, Credential, DirectoryEntry, SignedOp, UserOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::Cluster;

// ---------------------------------------------------------------------------------------------
// The checker: Wing & Gong's search with Lowe's memoisation of (linearized set, state).
// ---------------------------------------------------------------------------------------------

/// A sequential specification.
trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;

    /// The state after `input` if it may return `output` in `state` (`None` if it may not);
    /// `output` is `None` for an operation that never answered.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether the unanswered `input` has no effect in `state` and in every state reachable
    /// from it (so whether it was linearized does not matter any more).
    fn inert(&self, _state: &Self::State, _input: &Self::Input) -> bool {
        false
    }
}

/// One operation of a history: `ret` and `output` are `None` if it never answered.
#[derive(Clone, Debug)]
struct Op<I, O> {
    call: u64,
    ret: Option<u64>,
    input: I,
    output: Option<O>,
}

/// The checker's verdict.
#[derive(Debug)]
enum Verdict<S> {
    /// A linearization: indices into the history, in order.
    Linearizable(Vec<usize>),
    /// None exists; the longest linearizable prefix found and the state after it.
    Violation { prefix: Vec<usize>, state: S },
    /// The search budget ran out (neither proven nor refuted).
    GaveUp { explored: usize },
}

struct Search<'a, M: Model> {
    model: &'a M,
    ops: &'a [Op<M::Input, M::Output>],
    by_call: Vec<usize>,
    seen: HashSet<(Vec<u64>, M::State)>,
    explored: usize,
    budget: usize,
    path: Vec<usize>,
    best: (Vec<usize>, M::State),
}

fn has(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

impl<M: Model> Search<'_, M> {
    /// Whether the operations not in `done` can be linearized from `state`; `Err` when the
    /// budget runs out.
    fn dfs(&mut self, state: &M::State, done: &mut Vec<u64>) -> Result<bool, ()> {
        // The earliest answer among the answered operations not yet linearized: only an
        // operation called before it may come next (precedence is `a.ret < b.call`).
        let mut min_ret = None::<u64>;
        for (i, op) in self.ops.iter().enumerate() {
            if let (false, Some(ret)) = (has(done, i), op.ret) {
                min_ret = Some(min_ret.map_or(ret, |m| m.min(ret)));
            }
        }
        let Some(min_ret) = min_ret else {
            return Ok(true);
        };
        let mut key = done.clone();
        for (i, op) in self.ops.iter().enumerate() {
            if op.ret.is_none() && !has(done, i) && self.model.inert(state, &op.input) {
                flip(&mut key, i);
            }
        }
        if !self.seen.insert((key, state.clone())) {
            return Ok(false);
        }
        self.explored += 1;
        if self.explored > self.budget {
            return Err(());
        }
        if self.path.len() > self.best.0.len() {
            self.best = (self.path.clone(), state.clone());
        }
        for k in 0..self.by_call.len() {
            let i = self.by_call[k];
            let op = &self.ops[i];
            if op.call > min_ret {
                break;
            }
            if has(done, i) || (op.ret.is_none() && self.model.inert(state, &op.input)) {
                continue;
            }
            let Some(next) = self.model.step(state, &op.input, op.output.as_ref()) else {
                continue;
            };
            if op.ret.is_none() && next == *state {
                continue; // an unanswered no-op is the same as leaving it out
            }
            flip(done, i);
            self.path.push(i);
            if self.dfs(&next, done)? {
                return Ok(true);
            }
            self.path.pop();
            flip(done, i);
        }
        Ok(false)
    }
}

/// Checks that `ops` is linearizable with respect to `model` from `init`, exploring at most
/// `budget` configurations.
fn check<M: Model>(
    model: &M,
    init: &M::State,
    ops: &[Op<M::Input, M::Output>],
    budget: usize,
) -> (Verdict<M::State>, usize) {
    for op in ops {
        assert_eq!(
            op.ret.is_some(),
            op.output.is_some(),
            "answered iff it has an output"
        );
        assert!(
            op.ret.is_none_or(|r| r >= op.call),
            "an answer before its call"
        );
    }
    let mut by_call: Vec<usize> = (0..ops.len()).collect();
    by_call.sort_by_key(|&i| ops[i].call);
    let mut search = Search {
        model,
        ops,
        by_call,
        seen: HashSet::new(),
        explored: 0,
        budget,
        path: Vec::new(),
        best: (Vec::new(), init.clone()),
    };
    let mut done = vec![0u64; ops.len().div_ceil(64)];
    let verdict = match search.dfs(init, &mut done) {
        Ok(true) => Verdict::Linearizable(search.path.clone()),
        Ok(false) => Verdict::Violation {
            prefix: search.best.0.clone(),
            state: search.best.1.clone(),
        },
        Err(()) => Verdict::GaveUp {
            explored: search.explored,
        },
    };
    (verdict, search.explored)
}

// ---------------------------------------------------------------------------------------------
// The specification of one user's directory record.
// ---------------------------------------------------------------------------------------------

/// One user's record as far as the history can tell: the address of the last applied write
/// (`None` after an unregistration), the range its time stamp lies in (Unix ms), and its
/// sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Record {
    addr: Option<String>,
    at: (u64, u64),
    seq: u64,
}

/// A write (`addr: None` for an unregistration) with the range of its time stamp, or a read
/// with the range of the reader's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Input {
    Write {
        seq: u64,
        addr: Option<String>,
        at: (u64, u64),
    },
    Read {
        now: (u64, u64),
    },
}

/// A write's answer, or what a read showed of the user (`None`: not listed at all).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Output {
    Done,
    Refused,
    Read(Option<Shown>),
}

/// A directory entry as the check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shown {
    addr: Option<String>,
    last_seen: u64,
}

/// The user's record under leases of `lease_ms`.
struct Directory {
    lease_ms: u64,
}

impl Model for Directory {
    type State = Record;
    type Input = Input;
    type Output = Output;

    fn step(&self, state: &Record, input: &Input, output: Option<&Output>) -> Option<Record> {
        match input {
            Input::Write { seq, addr, at } => {
                let (next, answer) = if *seq > state.seq {
                    let next = Record {
                        addr: addr.clone(),
                        at: *at,
                        seq: *seq,
                    };
                    (next, Output::Done)
                } else {
                    (state.clone(), Output::Refused)
                };
                match output {
                    Some(o) if *o != answer => None,
                    _ => Some(next),
                }
            }
            Input::Read { now } => {
                let Some(Output::Read(Some(shown))) = output else {
                    return None; // a read always answers here, and the user is always listed
                };
                let stamp = shown.last_seen;
                if stamp < state.at.0 || stamp > state.at.1 {
                    return None;
                }
                let ok = match (&state.addr, &shown.addr) {
                    (None, None) => true,
                    (None, Some(_)) => false,
                    (Some(a), Some(b)) => a == b && stamp + self.lease_ms > now.0,
                    (Some(_), None) => stamp + self.lease_ms <= now.1,
                };
                ok.then(|| state.clone())
            }
        }
    }

    fn inert(&self, state: &Record, input: &Input) -> bool {
        // Sequence numbers only grow: a write at or below the last one is refused for ever.
        matches!(input, Input::Write { seq, .. } if *seq <= state.seq)
    }
}

// ---------------------------------------------------------------------------------------------
// Recording histories against the real cluster.
// ---------------------------------------------------------------------------------------------

const USERS: [&str; 2] = ["lin-alice", "lin-bob"];
const TASKS: usize = 6;
const MAX_OPS_PER_TASK: usize = 1500;
const LEASE_MS: u64 = 5_000;
/// The length of the recorded history (tasks start no operation after it once it holds
/// enough successes; else they go on for at most `HISTORY_MORE`).
const HISTORY: Duration = Duration::from_secs(9);
const HISTORY_MORE: Duration = Duration::from_secs(30);
/// The successes a history must hold to say something (an idle machine makes ~20 times more).
const MIN_READS: usize = 50;
const MIN_WRITES: usize = 20;
/// When the fault starts, and for how long, from the start of the history.
const FAULT_AT: Duration = Duration::from_secs(2);
const FAULT_FOR: Duration = Duration::from_secs(5);
/// Client timeouts: three requests in four give up early (and stay "unknown" if they get no
/// answer), the others wait past a stopped node's resumption (a node answers 503 within 3 s
/// when it has no majority).
const SHORT_TIMEOUT: Duration = Duration::from_millis(800);
const LONG_TIMEOUT: Duration = Duration::from_secs(5);
/// Configurations the checker may explore per user before giving up (a failure).
const BUDGET: usize = 5_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
}

/// What a client asked.
#[derive(Clone, Debug)]
enum Call {
    Write {
        user: usize,
        seq: u64,
        addr: Option<String>,
    },
    Read,
}

/// What it got.
#[derive(Clone, Debug)]
enum Outcome {
    Done,
    /// 403, with the sentence.
    Refused(String),
    Read(Vec<DirectoryEntry>),
    /// 503, a timeout or a broken connection: may or may not have happened.
    Unknown(String),
    /// The connection could not be opened: the request was never sent.
    NotSent(String),
    /// Any other answer (a failure of the test).
    Unexpected(String),
}

/// One recorded operation: nanoseconds on the shared monotonic clock, Unix ms around them.
#[derive(Clone, Debug)]
struct Event {
    task: usize,
    node: NodeId,
    call: u64,
    ret: u64,
    call_ms: u64,
    ret_ms: u64,
    what: Call,
    outcome: Outcome,
}

impl Event {
    fn describe(&self, user: usize) -> String {
        let what = match &self.what {
            Call::Write { seq, addr, .. } => match addr {
                Some(a) => format!("register {a} seq {seq}"),
                None => format!("unregister seq {seq}"),
            },
            Call::Read => "read".to_string(),
        };
        let got = match &self.outcome {
            Outcome::Read(dir) => match dir.iter().find(|e| e.user == USERS[user]) {
                Some(e) => format!(
                    "-> online {} addr {:?} last_seen {}",
                    e.online, e.addr, e.last_seen
                ),
                None => "-> user not listed".to_string(),
            },
            Outcome::Refused(why) => format!("-> Refused ({why})"),
            Outcome::Unknown(why) => format!("-> unknown ({why})"),
            Outcome::NotSent(why) => format!("-> not sent ({why})"),
            other => format!("-> {other:?}"),
        };
        format!(
            "task {} node {} [{:.3} s, {:.3} s] unix ms [{}, {}] {what} {got}",
            self.task,
            self.node,
            self.call as f64 / 1e9,
            self.ret as f64 / 1e9,
            self.call_ms,
            self.ret_ms,
        )
    }
}

/// What every client task shares.
struct Ctx {
    http: reqwest::Client,
    nodes: Vec<(NodeId, SocketAddr)>,
    users: Vec<Credential>,
    clock: Instant,
    /// Successful reads and writes so far: the history goes on past [`HISTORY`] until it has
    /// [`MIN_READS`] and [`MIN_WRITES`] (a busy machine makes fewer per second).
    reads_ok: AtomicUsize,
    writes_done: AtomicUsize,
}

impl Ctx {
    fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// Sends one operation to node `node` and records it.
    async fn run(
        &self,
        task: usize,
        node: usize,
        what: Call,
        op: Option<SignedOp>,
        wait: Duration,
    ) -> Event {
        let (id, addr) = self.nodes[node];
        let call_ms = unix_millis();
        let call = self.now();
        let outcome = match &op {
            Some(op) => {
                let sent = self
                    .http
                    .post(format!("http://{addr}/users/op"))
                    .json(op)
                    .timeout(wait)
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response.text().await;
                        match (status, body) {
                            (200, Ok(_)) => Outcome::Done,
                            (403, Ok(body)) => Outcome::Refused(body),
                            (503, _) => Outcome::Unknown("503".into()),
                            (_, Err(e)) => Outcome::Unknown(format!("{status}, body: {e}")),
                            (_, Ok(body)) => Outcome::Unexpected(format!("{status}: {body}")),
                        }
                    }
                    Err(e) if e.is_connect() => Outcome::NotSent(e.to_string()),
                    Err(e) => Outcome::Unknown(e.to_string()),
                }
            }
            None => {
                let sent = self
                    .http
                    .get(format!("http://{addr}/directory"))
                    .timeout(wait)
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status().as_u16() == 200 => {
                        match response.json::<Vec<DirectoryEntry>>().await {
                            Ok(dir) => Outcome::Read(dir),
                            Err(e) => Outcome::Unknown(format!("body: {e}")),
                        }
                    }
                    Ok(response) if response.status().as_u16() == 503 => {
                        Outcome::Unknown("503".into())
                    }
                    Ok(response) => Outcome::Unexpected(format!("{}", response.status())),
                    Err(e) if e.is_connect() => Outcome::NotSent(e.to_string()),
                    Err(e) => Outcome::Unknown(e.to_string()),
                }
            }
        };
        let ret = self.now();
        Event {
            task,
            node: id,
            call,
            ret,
            call_ms,
            ret_ms: unix_millis(),
            what,
            outcome,
        }
    }

    /// A signed write for `user` (a registration at `addr`, or an unregistration).
    fn write(&self, user: usize, addr: Option<String>) -> (Call, SignedOp) {
        let op = match &addr {
            Some(a) => UserOp::Register {
                addr: a.clone(),
                lease_ms: LEASE_MS,
            },
            None => UserOp::Unregister,
        };
        let signed = self.users[user].sign(op);
        let call = Call::Write {
            user,
            seq: signed.seq,
            addr,
        };
        (call, signed)
    }
}

/// One client task: random operations on random nodes until `until` or its op count.
async fn client(ctx: Arc<Ctx>, task: usize, until: Instant, seed: u64) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    for n in 0..MAX_OPS_PER_TASK {
        let enough = ctx.reads_ok.load(Ordering::Relaxed) >= MIN_READS
            && ctx.writes_done.load(Ordering::Relaxed) >= MIN_WRITES;
        if Instant::now() >= until && (enough || Instant::now() >= until + HISTORY_MORE) {
            break;
        }
        let node = rng.gen_range(0..ctx.nodes.len());
        let wait = if rng.gen_bool(0.75) {
            SHORT_TIMEOUT
        } else {
            LONG_TIMEOUT
        };
        let user = rng.gen_range(0..USERS.len());
        let event = match rng.gen_range(0..3) {
            0 => ctx.run(task, node, Call::Read, None, wait).await,
            kind => {
                let addr = (kind == 1).then(|| format!("peer-{task}-{n}.test:7000"));
                let (call, op) = ctx.write(user, addr);
                ctx.run(task, node, call, Some(op), wait).await
            }
        };
        match (&event.what, &event.outcome) {
            (Call::Read, Outcome::Read(_)) => ctx.reads_ok.fetch_add(1, Ordering::Relaxed),
            (Call::Write { .. }, Outcome::Done) => ctx.writes_done.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        events.push(event);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..10))).await;
    }
    events
}

/// The node most nodes name as Raft leader, waiting up to 10 s for one.
fn raft_leader(cluster: &Cluster) -> NodeId {
    support::poll(Duration::from_secs(10), || {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in cluster.running() {
            if let Some(leader) = cluster
                .status(id)
                .and_then(|s| s["store"]["leader"].as_u64())
            {
                *votes.entry(leader).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .find(|&(_, v)| v * 2 > cluster.running().count())
            .map(|(leader, _)| leader as NodeId)
    })
    .unwrap_or_else(|| panic!("no Raft leader within 10 s: {:?}", cluster.statuses()))
}

/// Writes `op` through `node` until it is done (bounded); returns its event.
async fn setup_write(ctx: &Ctx, user: usize, addr: Option<String>) -> Event {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (call, op) = ctx.write(user, addr.clone());
        let event = ctx.run(usize::MAX, 0, call, Some(op), LONG_TIMEOUT).await;
        match &event.outcome {
            Outcome::Done => return event,
            other if Instant::now() >= deadline => panic!("setup write failed: {other:?}"),
            Outcome::Refused(_) | Outcome::Unexpected(_) => panic!("setup write: {event:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads the directory from node index `node` until one read succeeds (bounded, 30 s).
async fn read_until_ok(ctx: &Ctx, node: usize) -> Event {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let event = ctx
            .run(usize::MAX, node, Call::Read, None, LONG_TIMEOUT)
            .await;
        match &event.outcome {
            Outcome::Read(_) => return event,
            other if Instant::now() >= deadline => {
                panic!("node {} never answered a read: {other:?}", event.node)
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What a read shows of `user`.
fn shown(dir: &[DirectoryEntry], user: usize) -> Option<Shown> {
    dir.iter().find(|e| e.user == USERS[user]).map(|e| {
        assert_eq!(
            e.online,
            e.addr.is_some(),
            "an entry online iff it has an address: {e:?}"
        );
        Shown {
            addr: e.addr.clone(),
            last_seen: e.last_seen,
        }
    })
}

/// The history of `user`: its checker operations and the events they came from.
fn user_history(events: &[Event], user: usize) -> (Vec<Op<Input, Output>>, Vec<&Event>) {
    let mut ops = Vec::new();
    let mut from = Vec::new();
    for e in events {
        let op = match (&e.what, &e.outcome) {
            (Call::Write { user: u, seq, addr }, outcome) if *u == user => {
                let input = |hi| Input::Write {
                    seq: *seq,
                    addr: addr.clone(),
                    at: (e.call_ms, hi),
                };
                match outcome {
                    Outcome::Done | Outcome::Refused(_) => Op {
                        call: e.call,
                        ret: Some(e.ret),
                        input: input(e.ret_ms),
                        output: Some(if matches!(outcome, Outcome::Done) {
                            Output::Done
                        } else {
                            Output::Refused
                        }),
                    },
                    Outcome::Unknown(_) => Op {
                        call: e.call,
                        ret: None,
                        input: input(u64::MAX),
                        output: None,
                    },
                    _ => continue,
                }
            }
            (Call::Read, Outcome::Read(dir)) => Op {
                call: e.call,
                ret: Some(e.ret),
                input: Input::Read {
                    now: (e.call_ms, e.ret_ms),
                },
                output: Some(Output::Read(shown(dir, user))),
            },
            _ => continue,
        };
        ops.push(op);
        from.push(e);
    }
    (ops, from)
}

/// Explains a violation: the state after the longest linearizable prefix and the operations
/// that could not come next.
fn explain(
    ops: &[Op<Input, Output>],
    from: &[&Event],
    user: usize,
    prefix: &[usize],
    state: &Record,
) -> String {
    let mut done = vec![false; ops.len()];
    for &i in prefix {
        done[i] = true;
    }
    let min_ret = (0..ops.len())
        .filter(|&i| !done[i])
        .filter_map(|i| ops[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    let mut text = format!(
        "user {}: {} of {} operations linearized at most; state then: {state:?}\nlast linearized:\n",
        USERS[user],
        prefix.len(),
        ops.len()
    );
    for &i in &prefix[prefix.len().saturating_sub(8)..] {
        text += &format!("  {}\n", from[i].describe(user));
    }
    text += "could not come next (called before the earliest pending answer):\n";
    let mut by_call: Vec<usize> = (0..ops.len()).filter(|&i| !done[i]).collect();
    by_call.sort_by_key(|&i| ops[i].call);
    for i in by_call
        .into_iter()
        .filter(|&i| ops[i].call <= min_ret)
        .take(12)
    {
        text += &format!("  {}\n", from[i].describe(user));
    }
    text
}

/// Counts for the report and the non-vacuity assertions.
#[derive(Debug, Default)]
struct Counts {
    reads_ok: usize,
    reads_failed: usize,
    writes_done: usize,
    writes_refused: usize,
    writes_unknown: usize,
    not_sent: usize,
    /// Reads and writes that succeeded between the fault's start and its end.
    served_in_fault: usize,
    /// Operations called during the fault that got a definite answer (at any time).
    answered_from_fault: usize,
    /// Requests sent to (or refused by) the faulty node during the fault.
    sent_to_victim_in_fault: usize,
}

fn scenario(name: &str, fault: Fault, seed: u64) {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]);
    let nodes: Vec<(NodeId, SocketAddr)> = cluster
        .config
        .nodes
        .iter()
        .map(|n| (n.id, n.http))
        .collect();
    let ready = support::wait_for(Duration::from_secs(30), || {
        nodes.iter().all(|(_, a)| {
            support::http_get_within(*a, "/directory", Duration::from_secs(5)).is_some()
        })
    });
    assert!(
        ready.is_some(),
        "the directory is not readable on every node within 30 s: {:?}",
        cluster.statuses()
    );
    let users: Vec<Credential> = USERS
        .iter()
        .map(|u| Credential::derive(u, "pw").unwrap())
        .collect();
    let ctx = Arc::new(Ctx {
        http: reqwest::Client::new(),
        nodes,
        users,
        clock: Instant::now(),
        reads_ok: AtomicUsize::new(0),
        writes_done: AtomicUsize::new(0),
    });
    let rt = support::runtime();

    // Every user exists and is offline before the history starts (so no operation of the
    // history meets an unknown user), with a known time stamp and sequence number.
    let init: Vec<Record> = rt.block_on(async {
        let mut last = Vec::new();
        for user in 0..USERS.len() {
            setup_write(&ctx, user, Some("setup.test:1".into())).await;
            last.push(setup_write(&ctx, user, None).await);
        }
        let read = read_until_ok(&ctx, 0).await;
        let Outcome::Read(dir) = &read.outcome else {
            unreachable!()
        };
        last.iter()
            .enumerate()
            .map(|(user, event)| {
                let Call::Write { seq, .. } = event.what else {
                    unreachable!()
                };
                let shown = shown(dir, user).expect("a registered user is listed");
                assert_eq!(shown.addr, None, "after unregistering: {dir:?}");
                Record {
                    addr: None,
                    at: (shown.last_seen, shown.last_seen),
                    seq,
                }
            })
            .collect()
    });

    let mut victim = 0;
    let mut window = (0, 0);
    let mut failover = None;
    let events: Vec<Event> = rt.block_on(async {
        let begin = Instant::now();
        let until = begin + HISTORY;
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| tokio::spawn(client(ctx.clone(), task, until, seed * 1000 + task as u64)))
            .collect();
        tokio::time::sleep_until((begin + FAULT_AT).into()).await;
        victim = raft_leader(&cluster);
        window.0 = ctx.now();
        match fault {
            Fault::Kill => cluster.kill(victim),
            Fault::Stop => cluster.signal(victim, "STOP"),
        }
        // Watch the survivors until the fault ends: when do they name another leader?
        let fault_end = Instant::now() + FAULT_FOR;
        while Instant::now() < fault_end {
            if failover.is_none() {
                let others: Vec<NodeId> = cluster.running().filter(|&id| id != victim).collect();
                let named: Vec<Option<u64>> = others
                    .iter()
                    .map(|&id| {
                        cluster
                            .status(id)
                            .and_then(|s| s["store"]["leader"].as_u64())
                    })
                    .collect();
                if let Some(Some(l)) = named.first() {
                    if named.iter().all(|n| *n == Some(*l)) && *l != u64::from(victim) {
                        failover = Some((*l, ctx.now()));
                    }
                }
            }
            tokio::time::sleep_until(
                fault_end
                    .min(Instant::now() + Duration::from_millis(100))
                    .into(),
            )
            .await;
        }
        window.1 = ctx.now();
        match fault {
            Fault::Kill => cluster.spawn(victim),
            Fault::Stop => cluster.signal(victim, "CONT"),
        }
        let limit = HISTORY + HISTORY_MORE + LONG_TIMEOUT + Duration::from_secs(10);
        let mut events = Vec::new();
        for task in tasks {
            let done = tokio::time::timeout(limit, task).await;
            events.extend(
                done.expect("a client task ends in time")
                    .expect("a client task"),
            );
        }
        // A last read from every node, after everything else.
        for node in 0..ctx.nodes.len() {
            events.push(read_until_ok(&ctx, node).await);
        }
        events
    });

    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.call);
    let timeline: Vec<String> = sorted.iter().map(|e| e.describe(0)).collect();
    let dump =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("linearizable-{name}.txt"));
    let _ = std::fs::write(&dump, timeline.join("\n"));
    let mut counts = Counts::default();
    for e in &events {
        let called_in_fault = e.call >= window.0 && e.call <= window.1;
        match (&e.what, &e.outcome) {
            (_, Outcome::Unexpected(why)) => panic!("{name}: unexpected answer {why}: {e:?}"),
            (_, Outcome::NotSent(_)) => counts.not_sent += 1,
            (Call::Read, Outcome::Read(_)) => counts.reads_ok += 1,
            (Call::Read, _) => counts.reads_failed += 1,
            (Call::Write { .. }, Outcome::Done) => counts.writes_done += 1,
            (Call::Write { .. }, Outcome::Refused(_)) => counts.writes_refused += 1,
            (Call::Write { .. }, _) => counts.writes_unknown += 1,
        }
        let ok = matches!(e.outcome, Outcome::Done | Outcome::Read(_));
        if called_in_fault && e.ret <= window.1 && ok {
            counts.served_in_fault += 1;
        }
        if called_in_fault && (ok || matches!(e.outcome, Outcome::Refused(_))) {
            counts.answered_from_fault += 1;
        }
        let sent = !matches!(e.outcome, Outcome::NotSent(_));
        if e.node == victim && called_in_fault && (sent || fault == Fault::Kill) {
            counts.sent_to_victim_in_fault += 1;
        }
    }

    let mut checked = Vec::new();
    for (user, init) in init.iter().enumerate() {
        let (ops, from) = user_history(&events, user);
        let pending = ops.iter().filter(|o| o.ret.is_none()).count();
        let t = Instant::now();
        let (verdict, explored) = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn_scoped(s, || {
                    check(&Directory { lease_ms: LEASE_MS }, init, &ops, BUDGET)
                })
                .unwrap()
                .join()
                .unwrap()
        });
        match verdict {
            Verdict::Linearizable(order) => assert!(
                validate(&Directory { lease_ms: LEASE_MS }, init, &ops, &order),
                "the checker's witness is not a linearization"
            ),
            Verdict::Violation { prefix, state } => {
                let dump = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("linearizable-{name}-{}.txt", USERS[user]));
                let all: Vec<String> = from.iter().map(|e| e.describe(user)).collect();
                let _ = std::fs::write(&dump, all.join("\n"));
                panic!(
                    "{name}: NOT linearizable (victim node {victim}, fault window {:.3}-{:.3} s; full history in {})\n{}",
                    window.0 as f64 / 1e9,
                    window.1 as f64 / 1e9,
                    dump.display(),
                    explain(&ops, &from, user, &prefix, &state)
                );
            }
            Verdict::GaveUp { explored } => {
                panic!(
                    "{name}: the checker gave up on {} after {explored} configurations",
                    USERS[user]
                )
            }
        }
        checked.push(format!(
            "{}: {} ops ({pending} unknown), {explored} configurations, {:.1} ms",
            USERS[user],
            ops.len(),
            t.elapsed().as_secs_f64() * 1e3
        ));
    }
    println!(
        "{name}: victim node {victim}, fault {:.2}-{:.2} s, new leader {}, {} events, {counts:?}, {:.1} s in all\n  {}",
        window.0 as f64 / 1e9,
        window.1 as f64 / 1e9,
        failover.map_or("none during the fault".to_string(), |(l, t)| format!(
            "node {l} at {:.2} s",
            t as f64 / 1e9
        )),
        events.len(),
        started.elapsed().as_secs_f64(),
        checked.join("\n  ")
    );
    assert!(
        counts.reads_ok >= MIN_READS,
        "{name}: too few successful reads: {counts:?}"
    );
    assert!(
        counts.writes_done >= MIN_WRITES,
        "{name}: too few successful writes: {counts:?}"
    );
    assert!(
        counts.answered_from_fault >= 5,
        "{name}: too few operations called during the fault were answered: {counts:?}"
    );
    assert!(
        counts.sent_to_victim_in_fault >= 1,
        "{name}: no request met the faulty node: {counts:?}"
    );
    drop(cluster);
}

#[test]
fn directory_histories_are_linearizable_while_the_leader_is_killed_and_restarted() {
    scenario("kill", Fault::Kill, 1);
}

#[test]
fn directory_histories_are_linearizable_while_the_leader_is_stopped_and_resumed() {
    scenario("stop", Fault::Stop, 2);
}

// ---------------------------------------------------------------------------------------------
// The checker's own tests: known histories, and a cross-check against brute force.
// ---------------------------------------------------------------------------------------------

/// A plain read/write register.
struct Register;

#[derive(Clone, Debug, PartialEq, Eq)]
enum RegOp {
    Write(u8),
    Read,
}

impl Model for Register {
    type State = u8;
    type Input = RegOp;
    type Output = Option<u8>;

    fn step(&self, state: &u8, input: &RegOp, output: Option<&Option<u8>>) -> Option<u8> {
        match (input, output) {
            (RegOp::Write(v), None | Some(None)) => Some(*v),
            (RegOp::Read, Some(Some(v))) if v == state => Some(*state),
            _ => None,
        }
    }
}

fn w(call: u64, ret: Option<u64>, v: u8) -> Op<RegOp, Option<u8>> {
    Op {
        call,
        ret,
        input: RegOp::Write(v),
        output: ret.map(|_| None),
    }
}

fn r(call: u64, ret: u64, v: u8) -> Op<RegOp, Option<u8>> {
    Op {
        call,
        ret: Some(ret),
        input: RegOp::Read,
        output: Some(Some(v)),
    }
}

fn linearizable<M: Model>(model: &M, init: &M::State, ops: &[Op<M::Input, M::Output>]) -> bool {
    match check(model, init, ops, 1_000_000).0 {
        Verdict::Linearizable(_) => true,
        Verdict::Violation { .. } => false,
        Verdict::GaveUp { .. } => panic!("gave up on a tiny history"),
    }
}

#[test]
fn the_checker_rejects_known_non_linearizable_histories() {
    // A read after a completed write returns the old value.
    assert!(!linearizable(
        &Register,
        &0,
        &[w(0, Some(10), 1), r(20, 30, 0)]
    ));
    // New-old inversion: during a long write, a read sees the new value, a later read the old.
    assert!(!linearizable(
        &Register,
        &0,
        &[w(0, Some(100), 1), r(10, 20, 1), r(30, 40, 0)]
    ));
    // The same with the write never answered.
    assert!(!linearizable(
        &Register,
        &0,
        &[w(0, None, 1), r(10, 20, 1), r(30, 40, 0)]
    ));
    // A read sees a value written only after it returned.
    assert!(!linearizable(&Register, &0, &[r(0, 10, 1), w(20, None, 1)]));
    // Two sequential reads disagree with the only order of two sequential writes.
    assert!(!linearizable(
        &Register,
        &0,
        &[w(0, Some(10), 1), w(20, Some(30), 2), r(40, 50, 1)]
    ));
}

#[test]
fn the_checker_accepts_known_linearizable_histories() {
    assert!(linearizable(
        &Register,
        &0,
        &[w(0, Some(100), 1), r(10, 20, 0), r(30, 40, 1)]
    ));
    assert!(linearizable(
        &Register,
        &0,
        &[w(0, None, 1), r(10, 20, 0), r(30, 40, 1)]
    ));
    assert!(linearizable(
        &Register,
        &0,
        &[w(0, None, 1), r(10, 20, 0), r(30, 40, 0)]
    ));
    assert!(linearizable(
        &Register,
        &0,
        &[
            w(0, Some(50), 1),
            w(10, Some(60), 2),
            r(70, 80, 1),
            r(90, 95, 1)
        ]
    ));
}

#[test]
fn the_directory_spec_checks_sequence_numbers_leases_and_stamps() {
    let spec = Directory { lease_ms: 100 };
    let init = Record {
        addr: None,
        at: (0, 0),
        seq: 1,
    };
    let write =
        |call: u64, ret: Option<u64>, seq: u64, addr: Option<&str>, out: Option<Output>| Op {
            call,
            ret,
            input: Input::Write {
                seq,
                addr: addr.map(str::to_string),
                at: (call, ret.unwrap_or(u64::MAX)),
            },
            output: out,
        };
    let read = |call: u64, ret: u64, addr: Option<&str>, last_seen: u64| Op {
        call,
        ret: Some(ret),
        input: Input::Read { now: (call, ret) },
        output: Some(Output::Read(Some(Shown {
            addr: addr.map(str::to_string),
            last_seen,
        }))),
    };
    let reg = write(10, Some(20), 5, Some("a"), Some(Output::Done));
    // Seen while the lease holds, hidden once it has run out.
    assert!(linearizable(
        &spec,
        &init,
        &[
            reg.clone(),
            read(30, 40, Some("a"), 15),
            read(200, 210, None, 15)
        ]
    ));
    // Hidden while the lease certainly holds.
    assert!(!linearizable(
        &spec,
        &init,
        &[reg.clone(), read(30, 40, None, 15)]
    ));
    // Shown after the lease certainly ran out.
    assert!(!linearizable(
        &spec,
        &init,
        &[reg.clone(), read(200, 210, Some("a"), 15)]
    ));
    // A stamp outside the write's call.
    assert!(!linearizable(
        &spec,
        &init,
        &[reg.clone(), read(30, 40, Some("a"), 25)]
    ));
    // A later write with a higher number refused, or a lower one accepted.
    let higher = write(50, Some(60), 9, None, Some(Output::Refused));
    assert!(!linearizable(&spec, &init, &[reg.clone(), higher]));
    let lower = write(50, Some(60), 3, None, Some(Output::Done));
    assert!(!linearizable(&spec, &init, &[reg.clone(), lower]));
    let lower = write(50, Some(60), 3, None, Some(Output::Refused));
    assert!(linearizable(
        &spec,
        &init,
        &[reg.clone(), lower, read(70, 80, Some("a"), 15)]
    ));
    // An unanswered unregistration may take effect after a later read, but not be undone.
    let gone = write(50, None, 7, None, None);
    assert!(linearizable(
        &spec,
        &init,
        &[
            reg.clone(),
            gone.clone(),
            read(60, 70, Some("a"), 15),
            read(80, 90, None, 60)
        ]
    ));
    assert!(!linearizable(
        &spec,
        &init,
        &[
            reg.clone(),
            gone,
            read(60, 70, None, 60),
            read(80, 90, Some("a"), 15)
        ]
    ));
    // An unanswered write that is overtaken by a higher number can no longer take effect.
    let stale = write(50, None, 6, Some("b"), None);
    let newer = write(55, Some(65), 8, None, Some(Output::Done));
    assert!(!linearizable(
        &spec,
        &init,
        &[reg, stale, newer, read(70, 80, Some("b"), 52)]
    ));
}

/// Brute force: the answered operations and some of the unanswered ones, in some order that
/// respects real time (no operation placed after one it precedes), form a valid sequential run.
fn brute_force<M: Model>(model: &M, init: &M::State, ops: &[Op<M::Input, M::Output>]) -> bool {
    fn go<M: Model>(
        model: &M,
        state: &M::State,
        ops: &[Op<M::Input, M::Output>],
        order: &mut Vec<usize>,
    ) -> bool {
        if (0..ops.len()).all(|i| order.contains(&i) || ops[i].ret.is_none()) {
            return true;
        }
        for (b, op) in ops.iter().enumerate() {
            let after_ok = order
                .iter()
                .all(|&a| op.ret.is_none_or(|rb| rb >= ops[a].call));
            if order.contains(&b) || !after_ok {
                continue;
            }
            if let Some(next) = model.step(state, &op.input, op.output.as_ref()) {
                order.push(b);
                if go(model, &next, ops, order) {
                    return true;
                }
                order.pop();
            }
        }
        false
    }
    go(model, init, ops, &mut Vec::new())
}

/// Whether `order` is a linearization of `ops`: every answered operation once, real time
/// respected, every step valid.
fn validate<M: Model>(
    model: &M,
    init: &M::State,
    ops: &[Op<M::Input, M::Output>],
    order: &[usize],
) -> bool {
    let mut seen = vec![false; ops.len()];
    let mut state = init.clone();
    for (k, &a) in order.iter().enumerate() {
        if std::mem::replace(&mut seen[a], true) {
            return false;
        }
        let respects = order[k + 1..]
            .iter()
            .all(|&b| ops[b].ret.is_none_or(|rb| rb >= ops[a].call));
        match model.step(&state, &ops[a].input, ops[a].output.as_ref()) {
            Some(next) if respects => state = next,
            _ => return false,
        }
    }
    (0..ops.len()).all(|i| seen[i] || ops[i].ret.is_none())
}

/// Compares the checker with brute force on `histories`; returns how many were linearizable.
fn cross_check<M: Model>(
    model: &M,
    init: &M::State,
    histories: &[Vec<Op<M::Input, M::Output>>],
) -> usize {
    let mut yes = 0;
    for ops in histories {
        let expected = brute_force(model, init, ops);
        match check(model, init, ops, 1_000_000).0 {
            Verdict::Linearizable(order) => {
                assert!(
                    expected,
                    "the checker accepts a non-linearizable history: {ops:?}"
                );
                assert!(
                    validate(model, init, ops, &order),
                    "a bad witness {order:?} for {ops:?}"
                );
                yes += 1;
            }
            Verdict::Violation { .. } => {
                assert!(
                    !expected,
                    "the checker rejects a linearizable history: {ops:?}"
                )
            }
            Verdict::GaveUp { .. } => panic!("gave up on a tiny history"),
        }
    }
    yes
}

#[test]
fn the_checker_agrees_with_brute_force_on_random_register_histories() {
    let mut rng = StdRng::seed_from_u64(7);
    let histories: Vec<Vec<Op<RegOp, Option<u8>>>> = (0..600)
        .map(|_| {
            (0..rng.gen_range(1..=7))
                .map(|_| {
                    let call = rng.gen_range(0..20);
                    let ret = call + rng.gen_range(0..10);
                    if rng.gen_bool(0.5) {
                        w(
                            call,
                            rng.gen_bool(0.75).then_some(ret),
                            rng.gen_range(1..=3),
                        )
                    } else {
                        r(call, ret, rng.gen_range(0..=3))
                    }
                })
                .collect()
        })
        .collect();
    let yes = cross_check(&Register, &0, &histories);
    assert!(
        (60..=540).contains(&yes),
        "{yes} of 600 linearizable: not a useful mix"
    );
}

#[test]
fn the_checker_agrees_with_brute_force_on_random_directory_histories() {
    // Histories made by running the spec at random points inside each operation's interval,
    // some then corrupted: most linearizable, many not.
    let lease = 10;
    let spec = Directory { lease_ms: lease };
    let init = Record {
        addr: None,
        at: (0, 0),
        seq: 0,
    };
    let mut rng = StdRng::seed_from_u64(11);
    let histories: Vec<Vec<Op<Input, Output>>> = (0..600)
        .map(|_| {
            let n = rng.gen_range(2..=7);
            let mut seqs: Vec<u64> = (1..=n as u64).collect();
            for k in (1..seqs.len()).rev() {
                seqs.swap(k, rng.gen_range(0..=k));
            }
            // (point, op): each op's effect happens at `point` inside its interval (or never).
            let mut planned: Vec<(Option<u64>, Op<Input, Output>, u64)> = (0..n)
                .map(|k| {
                    let call = rng.gen_range(0..30);
                    let ret = call + rng.gen_range(1..12);
                    let point = rng.gen_range(call..=ret);
                    let stamp = rng.gen_range(call..=point);
                    if rng.gen_bool(0.4) {
                        let op = Op {
                            call,
                            ret: Some(ret),
                            input: Input::Read { now: (call, ret) },
                            output: None,
                        };
                        (Some(point), op, stamp)
                    } else {
                        let answered = rng.gen_bool(0.7);
                        let addr = rng
                            .gen_bool(0.6)
                            .then(|| ["a", "b"][rng.gen_range(0..2)].to_string());
                        let hi = if answered { ret } else { u64::MAX };
                        let op = Op {
                            call,
                            ret: answered.then_some(ret),
                            input: Input::Write {
                                seq: seqs[k],
                                addr,
                                at: (call, hi),
                            },
                            output: None,
                        };
                        let point = if answered || rng.gen_bool(0.5) {
                            Some(if answered {
                                point
                            } else {
                                call + rng.gen_range(0..40)
                            })
                        } else {
                            None
                        };
                        (point, op, stamp)
                    }
                })
                .collect();
            planned.sort_by_key(|(p, ..)| p.unwrap_or(u64::MAX));
            let mut state = init.clone();
            for (point, op, stamp) in planned.iter_mut() {
                if point.is_none() {
                    continue;
                }
                match &op.input {
                    Input::Write { seq, addr, .. } => {
                        let done = *seq > state.seq;
                        if done {
                            state = Record {
                                addr: addr.clone(),
                                at: (*stamp, *stamp),
                                seq: *seq,
                            };
                        }
                        if op.ret.is_some() {
                            op.output = Some(if done { Output::Done } else { Output::Refused });
                        }
                    }
                    Input::Read { .. } => {
                        let now = *stamp;
                        let last_seen = state.at.0;
                        let online = state.addr.is_some() && last_seen + lease > now;
                        op.output = Some(Output::Read(Some(Shown {
                            addr: if online { state.addr.clone() } else { None },
                            last_seen,
                        })));
                    }
                }
            }
            // The stamps the spec records are the exact ones here; the history keeps ranges.
            let mut ops: Vec<Op<Input, Output>> =
                planned.into_iter().map(|(_, op, _)| op).collect();
            if rng.gen_bool(0.4) {
                let k = rng.gen_range(0..ops.len());
                ops[k].output = match ops[k].output.take() {
                    Some(Output::Done) => Some(Output::Refused),
                    Some(Output::Refused) => Some(Output::Done),
                    Some(Output::Read(Some(s))) if rng.gen_bool(0.5) => {
                        Some(Output::Read(Some(Shown {
                            addr: if s.addr.is_some() {
                                None
                            } else {
                                Some("a".into())
                            },
                            ..s
                        })))
                    }
                    Some(Output::Read(Some(s))) => Some(Output::Read(Some(Shown {
                        last_seen: s.last_seen + rng.gen_range(1..5),
                        ..s
                    }))),
                    other => other,
                };
            }
            ops
        })
        .collect();
    let yes = cross_check(&spec, &init, &histories);
    assert!(
        (100..=540).contains(&yes),
        "{yes} of 600 linearizable: not a useful mix"
    );
}
