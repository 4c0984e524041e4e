//! The seed system (RustChain's `DramaArcEngine`) ported onto
//! [`raceless::ArcEngine`]: four kinds of drama arc between agents, a small
//! relationship model (state, tension, trust) that event templates move
//! and that decides each arc's phase, and the seed's five-day rivalry
//! scenario, printed day by day. Time is a `ManualClock` advanced by days.
//!
//! The epilogue starts two arcs the 0.2 way, from async request handlers:
//! `claim`, await the (simulated) database insert, `publish` — and a
//! handler cancelled during its insert gives the pair back.
//!
//! Run it with `cargo run --example drama_arcs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raceless::arcs::{ArcEngine, ArcEvent, ArcKind, ArcPhase, Claimed, EndReason, Start};
use raceless::clock::{Clock, ManualClock};

const DAY: Duration = Duration::from_secs(86_400);

type Agent = &'static str;

/// The four kinds of the seed, with their expected length and the tension
/// at which the drama peaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DramaKind {
    FriendlyRivalry,
    HotTakeBeef,
    CollabBreakup,
    RedemptionArc,
}

impl DramaKind {
    fn name(self) -> &'static str {
        match self {
            DramaKind::FriendlyRivalry => "friendly_rivalry",
            DramaKind::HotTakeBeef => "hot_take_beef",
            DramaKind::CollabBreakup => "collab_breakup",
            DramaKind::RedemptionArc => "redemption_arc",
        }
    }

    fn days(self) -> u64 {
        match self {
            DramaKind::FriendlyRivalry => 7,
            DramaKind::HotTakeBeef => 10,
            DramaKind::CollabBreakup | DramaKind::RedemptionArc => 14,
        }
    }

    fn max_tension(self) -> i32 {
        match self {
            DramaKind::FriendlyRivalry => 50,
            DramaKind::HotTakeBeef => 80,
            DramaKind::CollabBreakup | DramaKind::RedemptionArc => 60,
        }
    }

    /// Event templates: (text, tension change, trust change). `{a}` and `{b}`
    /// are the two agents.
    fn templates(self) -> &'static [(&'static str, i32, i32)] {
        match self {
            DramaKind::FriendlyRivalry => &[
                ("{a} dares {b} to beat their block-validation time", 12, 0),
                (
                    "{b} posts a leaderboard with {a} conveniently in last place",
                    10,
                    -5,
                ),
                (
                    "{a} and {b} tie the rematch and split the bragging rights",
                    -20,
                    8,
                ),
                ("{b} quietly fixes a bug in {a}'s benchmark script", -6, 1),
                (
                    "{a} and {b} co-host a stream and laugh about the whole thing",
                    -4,
                    7,
                ),
            ],
            DramaKind::HotTakeBeef => &[
                (
                    "{a} calls {b}'s favourite consensus rule 'a museum piece'",
                    20,
                    -10,
                ),
                ("{b} answers with a 40-post thread about {a}", 25, -10),
                ("{a} and {b} agree, grudgingly, to debate it live", -15, 5),
            ],
            DramaKind::CollabBreakup => &[
                ("{a} ships the joint project without crediting {b}", 25, -20),
                ("{b} forks the repo and renames it", 15, -10),
                ("{a} and {b} sort out the credits over a long call", -25, 15),
            ],
            DramaKind::RedemptionArc => &[
                ("{a} publicly apologises to {b} for last season", -10, 10),
                ("{b} is not convinced yet", 10, -5),
                (
                    "{a} mentors {b}'s newest bot through its first epoch",
                    -15,
                    15,
                ),
            ],
        }
    }
}

impl ArcKind for DramaKind {
    fn expected_duration(&self) -> Duration {
        DAY * self.days() as u32
    }
}

/// How two agents stand with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Neutral,
    Friendly,
    Rivals,
    Frenemies,
}

/// The relationship engine's view of one pair.
#[derive(Debug, Clone, Copy)]
struct Relationship {
    standing: Standing,
    tension: i32,
    trust: i32,
}

impl Relationship {
    fn new(kind: DramaKind, tension: i32, trust: i32) -> Self {
        let mut r = Self {
            standing: Standing::Neutral,
            tension,
            trust,
        };
        r.standing = r.judge(kind.max_tension());
        r
    }

    fn judge(&self, max_tension: i32) -> Standing {
        if self.tension < 30 && self.trust > 60 {
            Standing::Friendly
        } else if self.tension * 2 >= max_tension {
            Standing::Rivals
        } else if self.trust >= 50 {
            Standing::Frenemies
        } else {
            Standing::Neutral
        }
    }

    /// Applies an event and re-judges the standing.
    fn apply(&mut self, kind: DramaKind, tension: i32, trust: i32) {
        self.tension = (self.tension + tension).clamp(0, 100);
        self.trust = (self.trust + trust).clamp(0, 100);
        self.standing = self.judge(kind.max_tension());
    }

    /// The seed's phase rules.
    fn phase(&self, kind: DramaKind) -> ArcPhase {
        let max = kind.max_tension();
        if self.standing == Standing::Friendly && self.tension < 30 && self.trust > 60 {
            ArcPhase::Completed
        } else if self.tension * 10 >= max * 8 {
            ArcPhase::Climax
        } else if self.tension * 2 >= max {
            ArcPhase::Escalation
        } else if self.standing == Standing::Frenemies {
            ArcPhase::Resolution
        } else {
            ArcPhase::Initiation
        }
    }
}

/// A small world: the arc engine plus the relationship model.
struct World {
    clock: ManualClock,
    engine: Arc<ArcEngine<Agent, DramaKind>>,
    relationships: BTreeMap<(Agent, Agent), Relationship>,
}

fn pair(a: Agent, b: Agent) -> (Agent, Agent) {
    if a < b {
        (a, b)
    } else {
        (b, a)
    }
}

fn fill(template: &str, a: Agent, b: Agent) -> String {
    template.replace("{a}", a).replace("{b}", b)
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::new();
        let engine = ArcEngine::builder()
            .clock(clock.clone())
            // The seed writes each new arc to its database first.
            .start_hook(|a: &Agent, b: &Agent, kind: &DramaKind| {
                println!(
                    "    (store) saved a new {} between {a} and {b}",
                    kind.name()
                );
                Ok(())
            })
            .build();
        engine.on_event(|event| match event {
            ArcEvent::Started(arc) => println!(
                "    [event] arc started: {} between {} and {}",
                arc.kind.name(),
                arc.agents.0,
                arc.agents.1
            ),
            ArcEvent::Progressed(arc) => println!(
                "    [event] arc progressed to {} (event #{})",
                arc.phase, arc.events_triggered
            ),
            ArcEvent::Ended(arc, reason) => println!(
                "    [event] arc between {} and {} ended ({reason:?}) after {} events",
                arc.agents.0, arc.agents.1, arc.events_triggered
            ),
            _ => {}
        });
        Self {
            clock,
            engine: Arc::new(engine),
            relationships: BTreeMap::new(),
        }
    }

    fn day(&self) -> u64 {
        self.clock
            .now()
            .duration_since(ManualClock::start())
            .unwrap_or_default()
            .as_secs()
            / DAY.as_secs()
            + 1
    }

    fn start(&mut self, a: Agent, b: Agent, kind: DramaKind, tension: i32, trust: i32) {
        self.relationships
            .entry(pair(a, b))
            .or_insert_with(|| Relationship::new(kind, tension, trust));
        match self.engine.start(a, b, kind) {
            Ok(Start::Started(_)) => println!("  {a} and {b} begin a {}", kind.name()),
            Ok(Start::AlreadyActive(arc)) => {
                println!("  {a} and {b} already have a {} going", arc.kind.name())
            }
            Err(e) => println!("  could not start: {e}"),
        }
    }

    /// One drama event: the template moves the relationship, the
    /// relationship decides the phase, the engine records it.
    fn event(&mut self, a: Agent, b: Agent, template: usize) {
        let Some(arc) = self.engine.status(&a, &b) else {
            println!("  no active arc between {a} and {b}");
            return;
        };
        let kind = arc.kind;
        let (text, tension, trust) = kind.templates()[template];
        let rel = self
            .relationships
            .get_mut(&pair(a, b))
            .expect("relationships are created with their arc");
        rel.apply(kind, tension, trust);
        let phase = rel.phase(kind);
        println!("  {}", fill(text, a, b));
        println!(
            "  relationship: {:?}, tension {}, trust {} -> phase {phase}",
            rel.standing, rel.tension, rel.trust
        );
        if let Err(e) = self.engine.progress(&a, &b, phase) {
            println!("  progress failed: {e}");
        }
    }

    fn sweep(&self) {
        let report = self.engine.process_all();
        println!(
            "  sweep: {} active looked at, {} expired",
            report.processed, report.expired
        );
    }

    fn next_day(&self) {
        self.clock.advance(DAY);
        println!("\n== Day {} ==", self.day());
    }
}

fn main() {
    let mut world = World::new();
    let (ada, rex) = ("ada_the_validator", "rex_the_relay");

    println!("== Day 1 ==");
    world.start(ada, rex, DramaKind::FriendlyRivalry, 20, 55);
    world.event(ada, rex, 0);
    world.sweep();

    world.next_day();
    // The seed's race: several request handlers try to start the same arc
    // at once (half of them name the pair the other way round). Exactly one
    // may win; here the arc already exists, so every one is told so.
    let engine = world.engine.clone();
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let engine = &engine;
                s.spawn(move || {
                    let (a, b) = if i % 2 == 0 { (ada, rex) } else { (rex, ada) };
                    engine
                        .start(a, b, DramaKind::FriendlyRivalry)
                        .map(|s| s.is_started())
                        .unwrap_or(false)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!(
        "  4 concurrent duplicate starts: {} started, {} told the arc is already active",
        results.iter().filter(|s| **s).count(),
        results.iter().filter(|s| !**s).count()
    );
    world.event(ada, rex, 1);
    world.sweep();

    for template in 2..5 {
        world.next_day();
        world.event(ada, rex, template);
        world.sweep();
    }

    let left = world.engine.status(&ada, &rex);
    println!(
        "\nAfter five days the rivalry is {}.",
        if left.is_none() {
            "over"
        } else {
            "still going"
        }
    );

    // Epilogue: a beef that nobody follows up on expires after twice its
    // expected ten days.
    println!("\n== Epilogue ==");
    let (mo, zed) = ("mo_the_miner", "zed_the_oracle");
    world.start(mo, zed, DramaKind::HotTakeBeef, 30, 40);
    world.event(mo, zed, 0);
    world.clock.advance(DAY * 21);
    println!("  ... 21 quiet days later (day {}) ...", world.day());
    world.sweep();
    let done = world.engine.end(&mo, &zed, EndReason::Manual);
    println!(
        "  ending it by hand now: {}",
        match done {
            Ok(_) => "ended".to_string(),
            Err(e) => format!("{e}"),
        }
    );
    println!("  active arcs: {}", world.engine.len());

    // The other two kinds, briefly.
    world.start(mo, ada, DramaKind::CollabBreakup, 10, 70);
    world.event(mo, ada, 0);
    world.start(zed, rex, DramaKind::RedemptionArc, 45, 30);
    world.event(zed, rex, 0);
    for arc in world.engine.active() {
        println!(
            "  active: {} between {} and {}, phase {}, {} event(s)",
            arc.kind.name(),
            arc.agents.0,
            arc.agents.1,
            arc.phase,
            arc.events_triggered
        );
    }

    // Async handlers: the pair is claimed, the handler awaits its own
    // insert, then publishes. A client that goes away mid-insert cancels
    // the handler's future: its claim is dropped and the pair is free.
    println!("\n== Async handlers ==");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let engine = world.engine.clone();
    rt.block_on(async move {
        let handler = |engine: Arc<ArcEngine<Agent, DramaKind>>, insert: Duration| async move {
            match engine.claim(rex, mo, DramaKind::HotTakeBeef) {
                Ok(Claimed::Claim(claim)) => {
                    println!("  claimed {rex} / {mo}; inserting ...");
                    tokio::time::sleep(insert).await; // the async database insert
                    let arc = claim.publish().expect("no hook fails here");
                    println!("  published: {} events so far", arc.events_triggered);
                }
                Ok(Claimed::AlreadyActive(arc)) => {
                    println!("  already taken: {}", arc.kind.name())
                }
                Err(e) => println!("  could not claim: {e}"),
            }
        };
        // The client gives up after 10 ms; the insert takes a second.
        let slow = handler(engine.clone(), Duration::from_secs(1));
        if tokio::time::timeout(Duration::from_millis(10), slow)
            .await
            .is_err()
        {
            println!(
                "  handler cancelled mid-insert; active arcs: {}",
                engine.len()
            );
        }
        tokio::spawn(handler(engine.clone(), Duration::from_millis(1)))
            .await
            .expect("the handler runs");
    });
    println!("  active arcs: {}", world.engine.len());
}
