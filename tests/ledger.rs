//! The ledger's promise, as a property: under any interleaving of grants, quota changes,
//! revokes, views, retried operations and reloads from the store's rows, no viewer is ever
//! shown an image more often than the owner allowed them in total, a retry never spends a
//! second view, and the ledger's count is exactly what the owner's changes and the views say.
//!
//! The commands are applied to the real state machine ([`State::apply`]) with real signed
//! operations, as every node applies the log; the model beside it is the owner's own account.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use imgcloud::codec::metadata::ImageId;
use imgcloud::sharing::{
    unix_millis, Change, Command, Credential, Reply, Sealed, SignedOp, State, UserOp,
};
use proptest::prelude::*;

const VIEWERS: [&str; 3] = ["bob", "carol", "dave"];
const IMAGES: usize = 2;

fn owner() -> &'static Credential {
    static OWNER: OnceLock<Credential> = OnceLock::new();
    OWNER.get_or_init(|| Credential::derive("alice", "alice pw").unwrap())
}

fn viewer(i: usize) -> &'static Credential {
    static V: OnceLock<Vec<Credential>> = OnceLock::new();
    &V.get_or_init(|| {
        VIEWERS
            .iter()
            .map(|v| Credential::derive(v, "pw").unwrap())
            .collect()
    })[i]
}

fn image(i: usize) -> ImageId {
    ImageId([i as u8 + 1; 16])
}

/// One step of an interleaving.
#[derive(Clone, Debug)]
enum Step {
    Add(usize, usize, u32),
    Set(usize, usize, u32),
    Revoke(usize, usize),
    /// A view of image `.1` by viewer `.0`, presenting a copy made for viewer `.2`.
    View(usize, usize, usize),
    /// The `.0`-th command applied so far, applied again (a retry, or a replay).
    Retry(usize),
    /// Every node restarts: the state is rebuilt from its rows.
    Reload,
}

fn step() -> impl Strategy<Value = Step> {
    let v = 0..VIEWERS.len();
    let i = 0..IMAGES;
    prop_oneof![
        2 => (v.clone(), i.clone(), 1u32..4).prop_map(|(v, i, n)| Step::Add(v, i, n)),
        1 => (v.clone(), i.clone(), 0u32..4).prop_map(|(v, i, n)| Step::Set(v, i, n)),
        1 => (v.clone(), i.clone()).prop_map(|(v, i)| Step::Revoke(v, i)),
        4 => (v.clone(), i.clone(), v.clone()).prop_map(|(v, i, c)| Step::View(v, i, c)),
        2 => (0usize..64).prop_map(Step::Retry),
        1 => Just(Step::Reload),
    ]
}

fn command(op: SignedOp, sealed: Option<Sealed>) -> Command {
    Command {
        at_ms: unix_millis(),
        op,
        sealed,
    }
}

fn register(who: &Credential) -> Command {
    command(
        who.sign(UserOp::Register {
            addr: "127.0.0.1:1".into(),
            lease_ms: 3000,
        }),
        None,
    )
}

/// The owner's view of one grant: what she allowed in total, and what was seen (counted from
/// the `Viewed` replies).
#[derive(Clone, Copy, Debug, Default)]
struct Account {
    allowed: u64,
    shown: u64,
    granted: bool,
}

impl Account {
    fn left(&self) -> u64 {
        self.allowed - self.shown
    }
}

/// A state with alice, the viewers and alice's images shared.
fn start() -> State {
    let mut state = State::default();
    for who in std::iter::once(owner()).chain((0..VIEWERS.len()).map(viewer)) {
        assert_eq!(state.apply(&register(who)).0, Reply::Done);
    }
    for i in 0..IMAGES {
        let op = owner().sign(UserOp::Share {
            name: format!("photo {i}"),
            file: [0; 32],
        });
        let sealed = sealed(i, vec![]);
        assert_eq!(state.apply(&command(op, Some(sealed))).0, Reply::Done);
    }
    state
}

/// Alice's image `i` as the store keeps it, with copies sealed for `viewers`.
fn sealed(i: usize, viewers: Vec<String>) -> Sealed {
    Sealed {
        image: image(i),
        owner: "alice".into(),
        viewers,
        bytes: 1000,
    }
}

fn grant(v: usize, i: usize, change: Change) -> Command {
    let op = owner().sign(UserOp::Grant {
        image: image(i),
        viewer: VIEWERS[v].into(),
        change,
        file: [0; 32],
    });
    let sealed = sealed(i, vec![]);
    command(op, Some(sealed))
}

fn view(v: usize, i: usize, copy_for: usize) -> Command {
    let op = viewer(v).sign(UserOp::View {
        file: [v as u8; 32],
    });
    let sealed = sealed(i, vec![VIEWERS[copy_for].into()]);
    command(op, Some(sealed))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_viewer_is_ever_shown_more_than_the_owner_allowed(steps in prop::collection::vec(step(), 1..80)) {
        let mut state = start();
        let mut accounts: BTreeMap<(usize, usize), Account> = BTreeMap::new();
        // Every command applied, with its first answer.
        let mut applied: Vec<(Command, Reply)> = Vec::new();
        for step in steps {
            match step {
                Step::Add(v, i, n) | Step::Set(v, i, n) => {
                    let change = if matches!(step, Step::Add(..)) { Change::Add(n) } else { Change::Set(n) };
                    let cmd = grant(v, i, change);
                    let (reply, _) = state.apply(&cmd);
                    let a = accounts.entry((v, i)).or_default();
                    match (change, &reply) {
                        (_, Reply::Granted { views_left, .. }) => {
                            match change {
                                Change::Add(n) => a.allowed = if a.granted { a.allowed + n as u64 } else { a.shown + n as u64 },
                                Change::Set(n) => a.allowed = a.shown + n as u64,
                                Change::Revoke => unreachable!(),
                            }
                            a.granted = true;
                            prop_assert_eq!(*views_left as u64, a.left());
                        }
                        (Change::Add(_), other) => prop_assert!(false, "an add was refused: {other:?}"),
                        (Change::Set(_), other) => prop_assert!(false, "a quota was refused: {other:?}"),
                        _ => unreachable!(),
                    }
                    applied.push((cmd, reply));
                }
                Step::Revoke(v, i) => {
                    let cmd = grant(v, i, Change::Revoke);
                    let (reply, _) = state.apply(&cmd);
                    let a = accounts.entry((v, i)).or_default();
                    if a.granted {
                        prop_assert!(matches!(reply, Reply::Granted { views_left: 0, .. }), "{reply:?}");
                        a.granted = false;
                        a.allowed = a.shown;
                    } else {
                        prop_assert!(matches!(reply, Reply::Refused(_)), "{reply:?}");
                    }
                    applied.push((cmd, reply));
                }
                Step::View(v, i, copy_for) => {
                    let cmd = view(v, i, copy_for);
                    let (reply, _) = state.apply(&cmd);
                    let a = accounts.entry((v, i)).or_default();
                    match &reply {
                        Reply::Viewed { views_left } => {
                            prop_assert_eq!(copy_for, v, "a copy made for another viewer was honoured");
                            prop_assert!(a.granted && a.left() > 0, "a view was granted with none left");
                            a.shown += 1;
                            prop_assert_eq!(*views_left as u64, a.left());
                        }
                        Reply::Default(_) => prop_assert!(
                            copy_for != v || !a.granted || a.left() == 0,
                            "a view with views left gave the default image"
                        ),
                        other => prop_assert!(false, "a view got {other:?}"),
                    }
                    applied.push((cmd, reply));
                }
                Step::Retry(k) if !applied.is_empty() => {
                    let (cmd, first) = applied[k % applied.len()].clone();
                    let (again, rows) = state.apply(&cmd);
                    // A retry of one of the user's last operations gets its first answer and
                    // changes nothing; an older one is refused as a replay. Never a new view.
                    prop_assert!(rows.is_empty(), "a retry changed the records");
                    prop_assert!(again == first || matches!(again, Reply::Forbidden(_)), "{first:?} then {again:?}");
                }
                Step::Retry(_) => {}
                Step::Reload => {
                    let mut reloaded = State::default();
                    for (key, row) in state.rows() {
                        reloaded.load_row(&key, &row).unwrap();
                    }
                    prop_assert_eq!(&reloaded, &state);
                    state = reloaded;
                }
            }
            // The ledger's own rows against what the owner allowed and the replies showed.
            for ((v, i), a) in &accounts {
                let record = &state.ledger.images[&image(*i)];
                match record.grants.get(VIEWERS[*v]) {
                    Some(g) => {
                        prop_assert_eq!(g.revoked, !a.granted, "{}'s grant of image {} revoked or not", VIEWERS[*v], i);
                        // Views spent: every Viewed reply, a revoke keeps them on the receipt.
                        prop_assert_eq!(g.used, a.shown, "views of image {} by {}", i, VIEWERS[*v]);
                        // Spent and left: never more than the owner allowed.
                        prop_assert!(
                            g.used + g.left as u64 <= a.allowed,
                            "{} may see image {i} {} + {} times, allowed {}",
                            VIEWERS[*v], g.used, g.left, a.allowed
                        );
                        prop_assert_eq!(g.left as u64, a.left());
                    }
                    None => prop_assert!(!a.granted && a.allowed == 0, "the ledger lost the grant of {}", VIEWERS[*v]),
                }
            }
        }
        // Every image the ledger answered with is counted in its rows, revoked grants included.
        let shown: u64 = applied
            .iter()
            .filter(|(_, r)| matches!(r, Reply::Viewed { .. }))
            .count() as u64;
        let in_ledger: u64 = state
            .ledger
            .images
            .values()
            .flat_map(|r| r.grants.values())
            .map(|g| g.used)
            .sum();
        prop_assert_eq!(shown, in_ledger);
    }
}
