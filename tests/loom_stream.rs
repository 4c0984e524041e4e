//! loom models of the `stream` component's races, on the public API:
//! cleanup vs start (including the start's window between registering its
//! stream and publishing it in the slot), start vs start (also a start
//! that judged an empty slot before another start won and ended), finish
//! vs start,
//! the slot's live flag vs the registry map (also after a start retried),
//! a dropped `StreamGuard` vs a
//! cleanup and a new start, and the background store writer's queue and
//! flush handshake.
//!
//! Run with
//! `RUSTFLAGS="--cfg raceless_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test --release --test loom_stream`.
#![cfg(raceless_loom)]

use std::sync::Arc;

use raceless::stream::{Busy, Pending, Session, StreamGuard, StreamId, StreamRegistry};

/// A registry and a session whose slot holds a stale stream (its worker
/// died without cleaning the session up).
fn stale() -> (Arc<StreamRegistry<u32>>, Arc<Session>) {
    let registry = Arc::new(StreamRegistry::new());
    let session = Arc::new(Session::new("s"));
    let old = registry.start(&session, Pending::new("old"), 0).unwrap();
    assert!(!registry.finish(&Session::new("elsewhere"), old));
    (registry, session)
}

/// The seed's race on a [`stale`] session: a cleanup on another thread
/// while this one starts a new stream. Returns the new stream and whether
/// the cleanup cleared anything.
fn cleanup_vs_start() -> (Arc<StreamRegistry<u32>>, Arc<Session>, StreamId, bool) {
    let (registry, session) = stale();
    let cleanup = {
        let (registry, session) = (registry.clone(), session.clone());
        loom::thread::spawn(move || registry.clear_stale(&session))
    };
    let new = registry
        .start(&session, Pending::new("new"), 1)
        .expect("the old stream is not live");
    let cleared = cleanup.join().unwrap();
    (registry, session, new, cleared)
}

/// The seed's race: a cleanup judges the old stream stale while a start
/// registers and publishes a new one. Whatever the interleaving, the new
/// stream and its pending fields stay in the slot; the cleanup clears only
/// the old one (then the start came after it: version 3).
#[test]
fn clear_stale_vs_start_never_clobbers() {
    loom::model(|| {
        let (registry, session, new, cleared) = cleanup_vs_start();
        let active = session.active().expect("the new stream was clobbered");
        assert_eq!(active.id, new);
        assert_eq!(active.pending_message.as_deref(), Some("new"));
        assert!(registry.is_live(new));
        assert_eq!(registry.len(), 1);
        assert_eq!(session.version(), if cleared { 3 } else { 2 });
    });
}

/// A start whose first CAS loses to a cleanup retries against the emptied
/// slot; the value it finally publishes must be the one whose live flag
/// the registry clears when the stream ends (the one the registry entry
/// holds: a retry reuses it). After the new stream's worker ends it
/// elsewhere, the session's cleanup must find it stale and clear it.
#[test]
fn retried_start_is_unregistered_through_its_flag() {
    loom::model(|| {
        let (registry, session, new, _) = cleanup_vs_start();
        assert!(!registry.finish(&Session::new("elsewhere"), new));
        assert!(!registry.is_live(new));
        assert!(
            registry.clear_stale(&session),
            "the published value still says live after its stream ended"
        );
        assert_eq!(session.active_id(), None);
    });
}

/// Two starts on one session whose stream is stale: exactly one wins, the
/// loser is refused with the winner's id and leaves nothing registered.
#[test]
fn start_vs_start_one_winner() {
    loom::model(|| {
        let (registry, session) = stale();
        let other = {
            let (registry, session) = (registry.clone(), session.clone());
            loom::thread::spawn(move || registry.start(&session, Pending::new("b"), 2))
        };
        let mine = registry.start(&session, Pending::new("a"), 1);
        let theirs = other.join().unwrap();
        let (winner, busy) = match (mine, theirs) {
            (Ok(w), Err(b)) | (Err(b), Ok(w)) => (w, b),
            other => panic!("exactly one start must win: {other:?}"),
        };
        assert_eq!(busy, Busy { active: winner });
        assert_eq!(session.active_id(), Some(winner));
        assert_eq!(registry.len(), 1, "the loser left its stream registered");
        assert_eq!(session.version(), 2);
    });
}

/// A start judges the slot, builds and registers its stream with no pin
/// held, then judges the slot again under the pin that publishes: another
/// start may win (and its stream end) in between. The value published
/// takes its version from the value its compare-and-swap replaced (so the
/// version counts every change), a start refused at either judgement leaves
/// nothing registered, and a live stream is never replaced.
#[test]
fn start_judges_again_where_it_publishes() {
    loom::model(|| {
        let registry = Arc::new(StreamRegistry::new());
        let session = Arc::new(Session::new("s"));
        let other = {
            let (registry, session) = (registry.clone(), session.clone());
            loom::thread::spawn(move || {
                let started = registry.start(&session, Pending::new("b"), 2);
                if let Ok(id) = started {
                    assert!(registry.finish(&session, id), "a live stream was replaced");
                }
                started
            })
        };
        let mine = registry.start(&session, Pending::new("a"), 1);
        let theirs = other.join().unwrap();
        match (mine, theirs) {
            (Ok(a), Err(busy)) => {
                assert_eq!(busy.active, a);
                assert_eq!((session.active_id(), session.version()), (Some(a), 1));
                assert_eq!(registry.len(), 1);
            }
            (Ok(a), Ok(b)) => {
                // The other stream started and ended first.
                assert!(!registry.is_live(b));
                assert_eq!((session.active_id(), session.version()), (Some(a), 3));
                assert_eq!(registry.len(), 1);
            }
            (Err(busy), Ok(b)) => {
                assert_eq!(busy.active, b);
                assert_eq!((session.active_id(), session.version()), (None, 2));
                assert_eq!(
                    registry.len(),
                    0,
                    "the refused start left its stream registered"
                );
            }
            (Err(a), Err(b)) => panic!("no start won: {a:?} {b:?}"),
        }
    });
}

/// A stream's worker finishes while a new start arrives: the finish always
/// empties the slot it holds; the start is refused (it came first) or
/// installs its stream after the finish, never lost and never leaked.
#[test]
fn finish_vs_start() {
    loom::model(|| {
        let registry = Arc::new(StreamRegistry::new());
        let session = Arc::new(Session::new("s"));
        let running = registry.start(&session, Pending::new("a"), 1).unwrap();
        let finisher = {
            let (registry, session) = (registry.clone(), session.clone());
            loom::thread::spawn(move || registry.finish(&session, running))
        };
        let started = registry.start(&session, Pending::new("b"), 2);
        assert!(
            finisher.join().unwrap(),
            "the slot held the finished stream"
        );
        assert!(!registry.is_live(running));
        match started {
            Ok(new) => {
                assert_eq!(session.active_id(), Some(new));
                assert!(registry.is_live(new));
                assert_eq!(registry.len(), 1);
                assert_eq!(session.version(), 3);
            }
            Err(busy) => {
                assert_eq!(busy.active, running);
                assert_eq!(session.active_id(), None);
                assert_eq!(registry.len(), 0);
                assert_eq!(session.version(), 2);
            }
        }
    });
}

/// The seed's day-to-day sequence: a stream ends (its worker calls
/// `finish`) and the user at once starts a new one, while a session GET runs
/// the cleanup. The cleanup may judge the finished stream stale after the
/// finish unregistered it, but its CAS is against the value holding the
/// old stream, so the new stream always survives.
#[test]
fn clear_stale_vs_finish_then_start() {
    loom::model(|| {
        let registry = Arc::new(StreamRegistry::new());
        let session = Arc::new(Session::new("s"));
        let old = registry.start(&session, Pending::new("old"), 0).unwrap();
        let cleanup = {
            let (registry, session) = (registry.clone(), session.clone());
            loom::thread::spawn(move || registry.clear_stale(&session))
        };
        assert!(registry.finish(&session, old));
        let new = registry.start(&session, Pending::new("new"), 1).unwrap();
        assert!(
            !cleanup.join().unwrap(),
            "nothing stale was ever in the slot long enough to clear"
        );
        let active = session.active().expect("the new stream was clobbered");
        assert_eq!(
            (active.id, active.pending_message.as_deref()),
            (new, Some("new"))
        );
        assert_eq!(registry.len(), 1);
    });
}

/// The live flag (read by cleanups and starts instead of a map lookup)
/// against the map (read by `is_live`): a stream's worker dies and
/// unregisters it from elsewhere while a session GET asks `is_live` and then
/// cleans up. Once `is_live` has said the stream is gone, the cleanup must
/// see it gone too and clear it; a cleanup that cleared must find it gone
/// from the map as well. Storing the flag outside the shard's critical
/// section that removes the entry (before or after it) fails one of the two.
#[test]
fn live_flag_agrees_with_the_map() {
    loom::model(|| {
        let registry = Arc::new(StreamRegistry::new());
        let session = Arc::new(Session::new("s"));
        let id = registry.start(&session, Pending::new("x"), 0).unwrap();
        let worker = {
            let registry = registry.clone();
            loom::thread::spawn(move || registry.finish(&Session::new("elsewhere"), id))
        };
        let gone = !registry.is_live(id);
        let cleared = registry.clear_stale(&session);
        if gone {
            assert!(cleared, "is_live said gone, the cleanup saw it live");
        }
        if cleared {
            assert!(!registry.is_live(id), "cleared a registered stream");
        }
        assert!(!worker.join().unwrap());
        assert_eq!(registry.clear_stale(&session), !cleared);
        assert_eq!(session.active_id(), None);
    });
}

/// The model can fail: the seed's cleanup (check liveness, then write
/// "no stream" unconditionally) is caught clobbering the new stream.
#[test]
#[should_panic(expected = "clobbered")]
fn racy_cleanup_is_caught() {
    loom::model(|| {
        let (registry, session) = stale();
        let cleanup = {
            let (registry, session) = (registry.clone(), session.clone());
            loom::thread::spawn(move || {
                let id = session.active_id().unwrap();
                if !registry.is_live(id) {
                    session.force_clear();
                }
            })
        };
        let new = registry.start(&session, Pending::new("new"), 1).unwrap();
        cleanup.join().unwrap();
        assert_eq!(
            session.active_id(),
            Some(new),
            "the new stream was clobbered"
        );
    });
}

/// How a cancelled handler ends its stream in `guard_drop_vs_cleanup_vs_start`.
/// `strict`: also assert that the cleanup never clears (off for the racy
/// variant that is to be caught clobbering, so it fails for that reason).
fn guard_drop_model(
    strict: bool,
    end: fn(StreamGuard<u32>, Arc<StreamRegistry<u32>>, Arc<Session>),
) {
    loom::model(move || {
        let registry = Arc::new(StreamRegistry::new());
        let session = Arc::new(Session::new("s"));
        let guard = registry
            .start_guard(&session, Pending::new("old"), 0)
            .unwrap();
        let old = guard.id();
        let handler = {
            let (registry, session) = (registry.clone(), session.clone());
            loom::thread::spawn(move || end(guard, registry, session))
        };
        let cleanup = {
            let (registry, session) = (registry.clone(), session.clone());
            loom::thread::spawn(move || registry.clear_stale(&session))
        };
        let started = registry.start_guard(&session, Pending::new("new"), 1);
        handler.join().unwrap();
        let cleared = cleanup.join().unwrap();
        assert!(!registry.is_live(old), "the dropped guard's stream is live");
        match started {
            Ok(new) => {
                let active = session.active().expect("the new stream was clobbered");
                assert_eq!(
                    (active.id, active.pending_message.as_deref()),
                    (new.id(), Some("new")),
                    "the new stream was clobbered"
                );
                assert!(registry.is_live(new.id()));
                assert_eq!(registry.len(), 1);
                drop(new);
                assert!(registry.is_empty() && session.active().is_none());
            }
            Err(busy) => {
                assert_eq!(busy, Busy { active: old });
                assert_eq!(
                    session.active_id(),
                    None,
                    "the dropped guard left its session busy"
                );
                assert!(registry.is_empty());
            }
        }
        // `finish` empties the slot before it unregisters: no stale value is
        // ever left for a cleanup to clear.
        if strict {
            assert!(
                !cleared,
                "a cleanup found a dropped guard's stream stale in the slot"
            );
        }
    });
}

/// A handler is cancelled (its `StreamGuard` dropped on another thread)
/// while a session GET runs the cleanup and the user starts a new stream
/// through a guard: the dropped stream is always finished and its session
/// freed; the new start is refused with the old id (it came first) or wins,
/// and then nothing clobbers it; the cleanup never clears anything.
#[test]
fn guard_drop_vs_cleanup_vs_start() {
    guard_drop_model(true, |guard, _, _| drop(guard));
}

/// The model can fail: a guard whose drop unregisters its stream before
/// it empties the slot (even with a correct CAS) leaves a stale value in
/// the slot for a moment, which a concurrent cleanup is caught clearing.
#[test]
#[should_panic(expected = "stale in the slot")]
fn guard_drop_unregistering_first_is_caught() {
    guard_drop_model(true, |guard, registry, session| {
        let id = guard.detach();
        registry.finish(&Session::new("elsewhere"), id); // unregister only
        registry.clear_stale(&session); // then empty the slot
    });
}

/// The model can fail: a guard whose drop unregisters first and then
/// clears the slot check-then-act ("still ours? then clear") clobbers a
/// stream started in between.
#[test]
#[should_panic(expected = "clobbered")]
fn racy_guard_drop_is_caught() {
    guard_drop_model(false, |guard, registry, session| {
        let id = guard.detach();
        registry.finish(&Session::new("elsewhere"), id); // unregister only
        if session.active_id() == Some(id) {
            session.force_clear();
        }
    });
}

/// A snapshot of session `id` at `version`.
fn snap(id: &str, version: u64) -> raceless::stream::SessionSnapshot {
    raceless::stream::SessionSnapshot {
        session_id: id.into(),
        version,
        active: None,
    }
}

/// A fresh store directory per execution (in memory when the machine has
/// /dev/shm, so the model's `fsync`s are cheap).
fn store_dir() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm).unwrap(),
        _ => tempfile::tempdir().unwrap(),
    }
}

fn stored_version(writer: &raceless::stream::StoreWriter, id: &str) -> Option<u64> {
    writer.store().load(id).unwrap().map(|s| s.version)
}

/// The background writer's queue and flush handshake: a save of another
/// session races the writer's batch while this thread saves and flushes.
/// `flush` returns only once everything accepted before it is written
/// (this thread's own save is on disk, whatever batch it fell into), and
/// two versions of one session saved from two threads end with the newer
/// one on disk, whatever the arrival order.
#[test]
fn store_writer_flush_and_newest_version() {
    use raceless::stream::{SessionStore, StoreWriter};
    loom::model(|| {
        let dir = store_dir();
        let writer = StoreWriter::spawn(SessionStore::open(dir.path()).unwrap()).unwrap();
        let other = {
            let writer = writer.clone();
            loom::thread::spawn(move || {
                writer.save(&snap("b", 1)).unwrap();
                writer.save(&snap("s", 2)).unwrap();
            })
        };
        writer.save(&snap("a", 1)).unwrap();
        writer.save(&snap("s", 1)).unwrap();
        writer.flush();
        assert_eq!(
            stored_version(&writer, "a"),
            Some(1),
            "flush returned before a save accepted earlier was written"
        );
        assert!(stored_version(&writer, "s").is_some());
        other.join().unwrap();
        writer.flush();
        assert_eq!(
            stored_version(&writer, "b"),
            Some(1),
            "flush returned before the other thread's save was written"
        );
        assert_eq!(
            stored_version(&writer, "s"),
            Some(2),
            "an older version was written last"
        );
        writer.shutdown();
    });
}
