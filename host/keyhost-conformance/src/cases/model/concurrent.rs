//! `model.concurrent`: operations of several sets of instances at once, checked for
//! linearizability name by name.

use super::*;

/// One operation of `model.concurrent` and what it answered.
#[derive(Debug, Clone)]
struct Event {
    client: usize,
    name: String,
    call: Call,
    start: Duration,
    end: Duration,
    answer: Answer,
}

/// The operations `model.concurrent` runs; a create's value identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Create(u32),
    Get,
    Delete,
}

/// An answer, as far as the model distinguishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Done,
    Value(Vec<u8>),
    NotFound,
    AlreadyExists,
}

/// The bytes of the record that create `id` writes: distinct for every create of a
/// round, so that a read says whose record it saw.
fn concurrent_value(id: u32) -> Vec<u8> {
    format!("kc-concurrent-{id:08}").into_bytes()
}

impl Event {
    fn describe(&self) -> String {
        let call = match self.call {
            Call::Create(id) => format!("create(record {id})"),
            Call::Get => "get".into(),
            Call::Delete => "delete".into(),
        };
        let answer = match &self.answer {
            Answer::Done => "ok".to_owned(),
            Answer::NotFound => "not-found".into(),
            Answer::AlreadyExists => "already-exists".into(),
            Answer::Value(v) => match std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.strip_prefix("kc-concurrent-"))
            {
                Some(id) => format!("record {}", id.trim_start_matches('0')),
                None => format!("{} other bytes", v.len()),
            },
        };
        format!(
            "set {} {:>9.3}..{:<9.3} ms  {call} -> {answer}",
            self.client,
            self.start.as_secs_f64() * 1000.0,
            self.end.as_secs_f64() * 1000.0
        )
    }
}

/// Whether some order of `events` (all on one name that starts out holding
/// `initial`), each taking effect between its start and its end, explains every
/// answer. Depth-first over the operations that may come next, remembering the
/// (done, state) pairs already explored.
///
/// One allowance of the contract: a delete that overlaps another successful
/// delete of the name may succeed although the other removed the record.
fn linearizable(events: &[Event], initial: Option<u32>) -> bool {
    fn search(
        events: &[Event],
        twin_delete: &[bool],
        done: u64,
        state: Option<u32>,
        seen: &mut HashSet<(u64, Option<u32>)>,
    ) -> bool {
        let all = (1u64 << events.len()) - 1;
        if done == all {
            return true;
        }
        if !seen.insert((done, state)) {
            return false;
        }
        // Whatever ended before another started must come first.
        let first_end = events
            .iter()
            .enumerate()
            .filter(|(i, _)| done & (1 << i) == 0)
            .map(|(_, e)| e.end)
            .min()
            .unwrap_or_default();
        for (i, e) in events.iter().enumerate() {
            if done & (1 << i) != 0 || e.start > first_end {
                continue;
            }
            let next = match (e.call, &e.answer, state) {
                (Call::Create(id), Answer::Done, None) => Some(Some(id)),
                (Call::Create(_), Answer::AlreadyExists, Some(s)) => Some(Some(s)),
                (Call::Get, Answer::Value(v), Some(s)) if *v == concurrent_value(s) => Some(Some(s)),
                (Call::Get, Answer::NotFound, None) => Some(None),
                (Call::Delete, Answer::Done, Some(_)) => Some(None),
                (Call::Delete, Answer::Done, None) if twin_delete[i] => Some(None),
                (Call::Delete, Answer::NotFound, None) => Some(None),
                _ => None,
            };
            if let Some(next) = next
                && search(events, twin_delete, done | (1 << i), next, seen)
            {
                return true;
            }
        }
        false
    }
    assert!(events.len() < 64, "too many operations on one name to check");
    let succeeded_delete = |e: &Event| e.call == Call::Delete && e.answer == Answer::Done;
    let twin_delete: Vec<bool> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            succeeded_delete(e)
                && events
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && succeeded_delete(o) && o.start <= e.end && e.start <= o.end)
        })
        .collect();
    search(events, &twin_delete, 0, initial, &mut HashSet::new())
}

/// Names of a round of `model.concurrent`: few, so that operations collide, and
/// neighbours, so that a store that confuses them shows it.
const CONCURRENT_NAMES: [&str; 3] = ["k", "k0", "K"];

/// `model.concurrent`.
pub(crate) async fn concurrent(kit: &Kit) -> Checked {
    let sets = load_sets(kit).await?;
    let rounds = kit.budget.map_or(DEFAULT_ROUNDS, |b| (b / 40).max(1));
    let mut rng = StdRng::seed_from_u64(kit.seed ^ 0x636f_6e63_7572_7265);
    for round in 0..rounds {
        let run = run_prefix(kit, 'c', round);
        let result = concurrent_round(kit, &sets, &run, &mut rng).await;
        clean(kit, &run, &Model::default()).await;
        if let Err(why) = result {
            return Err(format!(
                "round {} of seed {} (reproduces only as likely as the timing does): {why}",
                round + 1,
                kit.seed
            ));
        }
    }
    Ok(None)
}

async fn concurrent_round(kit: &Kit, sets: &[Set], run: &str, rng: &mut StdRng) -> Result<(), String> {
    // Some names hold a record before the round starts.
    let mut initial: BTreeMap<&str, Option<u32>> = BTreeMap::new();
    let mut next_id = 1u32;
    for name in CONCURRENT_NAMES {
        let state = if rng.random_bool(0.5) {
            let id = next_id;
            next_id += 1;
            kit.store
                .create(&format!("{run}{name}"), &concurrent_value(id))
                .await
                .map_err(|e| format!("create(P+{name:?}) before the round failed with {e}"))?;
            Some(id)
        } else {
            None
        };
        initial.insert(name, state);
    }
    // Each set gets a list of operations, all started at once.
    let mut plans: Vec<Vec<(&str, Call)>> = Vec::new();
    for _ in 0..sets.len() {
        let plan = (0..6)
            .map(|_| {
                let name = CONCURRENT_NAMES[rng.random_range(0..CONCURRENT_NAMES.len())];
                let call = match rng.random_range(0..10) {
                    0..4 => {
                        next_id += 1;
                        Call::Create(next_id)
                    }
                    4..7 => Call::Get,
                    _ => Call::Delete,
                };
                (name, call)
            })
            .collect();
        plans.push(plan);
    }
    let origin = Instant::now();
    let clients = plans.iter().enumerate().map(|(client, plan)| {
        let store = sets[client].store.clone();
        async move {
            let mut events = Vec::new();
            for (name, call) in plan {
                let full = format!("{run}{name}");
                let start = origin.elapsed();
                let answer = match call {
                    Call::Create(id) => store.create(&full, &concurrent_value(*id)).await.map(|()| Answer::Done),
                    Call::Get => store.get(&full).await.map(|v| Answer::Value(v.to_vec())),
                    Call::Delete => store.delete(&full).await.map(|()| Answer::Done),
                };
                let answer = match answer {
                    Ok(a) => a,
                    Err(Error::NotFound) => Answer::NotFound,
                    Err(Error::AlreadyExists) => Answer::AlreadyExists,
                    Err(e) => return Err(format!("set {client}: {call:?} of P+{name:?} failed with {e}")),
                };
                events.push(Event {
                    client,
                    name: (*name).to_owned(),
                    call: *call,
                    start,
                    end: origin.elapsed(),
                    answer,
                });
            }
            Ok(events)
        }
    });
    let mut events: Vec<Event> = Vec::new();
    for result in futures::future::join_all(clients).await {
        events.extend(result?);
    }
    // And what each name holds afterwards, read once all are done.
    for name in CONCURRENT_NAMES {
        let start = origin.elapsed();
        let answer = match kit.store.get(&format!("{run}{name}")).await {
            Ok(v) => Answer::Value(v.to_vec()),
            Err(Error::NotFound) => Answer::NotFound,
            Err(e) => return Err(format!("get(P+{name:?}) after the round failed with {e}")),
        };
        events.push(Event {
            client: 0,
            name: name.to_owned(),
            call: Call::Get,
            start,
            end: origin.elapsed(),
            answer,
        });
    }
    for name in CONCURRENT_NAMES {
        let mut mine: Vec<Event> = events.iter().filter(|e| e.name == name).cloned().collect();
        mine.sort_by_key(|e| e.start);
        if !linearizable(&mine, initial[name]) {
            let mut out = format!(
                "no order of these operations on P+{name:?} (which {} before the round) explains their answers:\n",
                match initial[name] {
                    Some(id) => format!("held record {id}"),
                    None => "held nothing".to_owned(),
                }
            );
            for e in &mine {
                let _ = writeln!(out, "  {}", e.describe());
            }
            return Err(out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(start: u64, end: u64, call: Call, answer: Answer) -> Event {
        Event {
            client: 0,
            name: "k".into(),
            call,
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
            answer,
        }
    }

    #[test]
    fn overlapping_creates_may_go_either_way_but_only_one_wins() {
        let both_won = [
            event(0, 10, Call::Create(1), Answer::Done),
            event(1, 11, Call::Create(2), Answer::Done),
        ];
        assert!(!linearizable(&both_won, None));
        let one_won = [
            event(0, 10, Call::Create(1), Answer::AlreadyExists),
            event(1, 11, Call::Create(2), Answer::Done),
            event(12, 13, Call::Get, Answer::Value(concurrent_value(2))),
        ];
        assert!(linearizable(&one_won, None));
        // The loser's value read afterwards: no order explains it.
        let wrong_read = [
            event(0, 10, Call::Create(1), Answer::AlreadyExists),
            event(1, 11, Call::Create(2), Answer::Done),
            event(12, 13, Call::Get, Answer::Value(concurrent_value(1))),
        ];
        assert!(!linearizable(&wrong_read, None));
    }

    #[test]
    fn overlapping_deletes_may_both_succeed_but_a_later_one_may_not() {
        let twins = [
            event(0, 10, Call::Delete, Answer::Done),
            event(1, 11, Call::Delete, Answer::Done),
            event(12, 13, Call::Get, Answer::NotFound),
        ];
        assert!(linearizable(&twins, Some(1)));
        let later = [
            event(0, 10, Call::Delete, Answer::Done),
            event(11, 12, Call::Delete, Answer::Done),
        ];
        assert!(!linearizable(&later, Some(1)));
        // And a delete alone of nothing is still not-found.
        assert!(!linearizable(&[event(0, 1, Call::Delete, Answer::Done)], None));
    }

    #[test]
    fn real_time_order_is_respected() {
        // A delete that ended before a get started: the get cannot see the record.
        let stale = [
            event(0, 1, Call::Delete, Answer::Done),
            event(2, 3, Call::Get, Answer::Value(concurrent_value(7))),
        ];
        assert!(!linearizable(&stale, Some(7)));
        // Overlapping, the get may come first.
        let overlapping = [
            event(0, 5, Call::Delete, Answer::Done),
            event(2, 3, Call::Get, Answer::Value(concurrent_value(7))),
        ];
        assert!(linearizable(&overlapping, Some(7)));
    }
}
