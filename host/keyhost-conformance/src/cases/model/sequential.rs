//! `model.sequential`: one sequence of steps, checked step by step, shrunk on failure.

use super::*;

/// What one run of steps needs: the sets of instances, the sizes the plugin
/// holds, and the names it created (to remove them afterwards).
struct Runner<'a> {
    kit: &'a Kit,
    sets: &'a [Set],
    sizes: RangeInclusive<usize>,
}

/// How a step broke the contract: the step's index and what went wrong.
type Broken = (usize, String);

impl Runner<'_> {
    /// Runs `steps` under the prefix `run`, checking each against the model; stops
    /// at the first broken step. Removes what it created either way.
    async fn replay(&self, run: &str, steps: &[Step]) -> Result<(), Broken> {
        let mut model = Model::default();
        let mut result = Ok(());
        for (i, step) in steps.iter().enumerate() {
            if let Err(why) = self.check(run, &mut model, step).await {
                result = Err((i, why));
                break;
            }
        }
        clean(self.kit, run, &model).await;
        result
    }

    /// Runs one step and compares its answer with what the model allows.
    async fn check(&self, run: &str, model: &mut Model, step: &Step) -> Result<(), String> {
        let set = &self.sets[step.set];
        let store = &set.store;
        match &step.op {
            Op::Create { name, value } => {
                let full = format!("{run}{name}");
                let bytes = value.bytes();
                let got = store.create(&full, &bytes).await;
                let fits = self.sizes.contains(&bytes.len());
                let exists = model.records.contains_key(&full);
                let (start, end) = (self.sizes.start(), self.sizes.end());
                match got {
                    Ok(()) if !fits => Err(format!(
                        "create stored a {}-byte record, outside the sizes the plugin holds ({start}..={end}); expected invalid-argument",
                        bytes.len()
                    )),
                    Ok(()) if exists => Err(format!(
                        "create succeeded although the name holds a record{}; expected already-exists",
                        if model.records.get(&full) == Some(value) {
                            " (the same bytes)"
                        } else {
                            ""
                        }
                    )),
                    Ok(()) => {
                        model.records.insert(full, *value);
                        Ok(())
                    }
                    Err(Error::AlreadyExists) if exists => Ok(()),
                    Err(Error::AlreadyExists) => {
                        Err("create returned already-exists, but the name holds no record".into())
                    }
                    Err(Error::InvalidArgument(_)) if !fits => Ok(()),
                    Err(Error::InvalidArgument(_)) if !portable(&full) && !exists => Ok(()),
                    Err(e) if !fits => Err(format!(
                        "create of a {}-byte record, outside the sizes the plugin holds ({start}..={end}), failed with {e}; expected invalid-argument",
                        bytes.len()
                    )),
                    Err(e) => Err(format!(
                        "create failed with {e}; expected {}",
                        if exists { "already-exists" } else { "success" }
                    )),
                }
            }
            Op::Get { name } => {
                let full = format!("{run}{name}");
                let got = store.get(&full).await;
                match (model.records.get(&full), got) {
                    (Some(value), Ok(bytes)) => {
                        let expected = value.bytes();
                        if bytes[..] == expected[..] {
                            Ok(())
                        } else {
                            Err(format!(
                                "get returned {} bytes that differ from the {} bytes stored{}",
                                bytes.len(),
                                expected.len(),
                                crate::kit::first_difference(&bytes, &expected)
                            ))
                        }
                    }
                    (Some(_), Err(e)) => Err(format!("get failed with {e}, but the name holds a record")),
                    (None, Err(Error::NotFound)) => Ok(()),
                    (None, Err(Error::InvalidArgument(_))) if !portable(&full) => Ok(()),
                    (None, Ok(bytes)) => {
                        let whose = model
                            .records
                            .iter()
                            .find(|(_, v)| v.bytes()[..] == bytes[..])
                            .map(|(n, _)| format!(": the record of {:?}", &n[run.len()..]))
                            .unwrap_or_default();
                        Err(format!(
                            "get returned a {}-byte record, but the name holds none{whose}; expected not-found",
                            bytes.len()
                        ))
                    }
                    (None, Err(e)) => Err(format!("get failed with {e}; expected not-found")),
                }
            }
            Op::Delete { name } => {
                let full = format!("{run}{name}");
                let got = store.delete(&full).await;
                match (model.records.contains_key(&full), got) {
                    (true, Ok(())) => {
                        model.records.remove(&full);
                        Ok(())
                    }
                    (true, Err(e)) => Err(format!("delete failed with {e}, but the name holds a record")),
                    (false, Err(Error::NotFound)) => Ok(()),
                    (false, Err(Error::InvalidArgument(_))) if !portable(&full) => Ok(()),
                    (false, Ok(())) => Err("delete succeeded, but the name holds no record; expected not-found".into()),
                    (false, Err(e)) => Err(format!("delete failed with {e}; expected not-found")),
                }
            }
            Op::List { prefix, after, limit } => {
                let full_prefix = format!("{run}{prefix}");
                let after = after.as_ref().map(|a| match a {
                    After::Rel(a) => format!("{run}{a}"),
                    After::Abs(a) => a.clone(),
                });
                self.check_page(store.as_ref(), model, &full_prefix, after.as_deref(), *limit)
                    .await
                    .map(drop)
            }
            Op::Page { prefix, limit } => {
                let full_prefix = format!("{run}{prefix}");
                let mut after: Option<String> = None;
                for _ in 0..=model.records.len() + 1 {
                    match self
                        .check_page(store.as_ref(), model, &full_prefix, after.as_deref(), *limit)
                        .await?
                    {
                        Some(next) => after = Some(next),
                        None => return Ok(()),
                    }
                }
                Err(format!(
                    "paging did not end after {} pages, with {} names to list",
                    model.records.len() + 2,
                    model.matching(&full_prefix, None).len()
                ))
            }
            Op::Status => {
                let start = Instant::now();
                let status = store
                    .status()
                    .await
                    .map_err(|e| format!("status failed with {e}, but reads succeed"))?;
                let took = start.elapsed();
                // latency-ms is milliseconds: a round trip inside the call cannot
                // take longer than the call.
                if status.latency > took + Duration::from_millis(1) {
                    return Err(format!(
                        "status reported a latency of {} ms, but the whole call took {:.3} ms: latency-ms is in milliseconds",
                        status.latency.as_millis(),
                        took.as_secs_f64() * 1000.0
                    ));
                }
                Ok(())
            }
            Op::Recycle => {
                set.plugin.recycle();
                Ok(())
            }
        }
    }

    /// One `list` call, checked: the page must be the first names the model has
    /// after `after`, `next` set exactly when more follow. Returns `next`.
    async fn check_page(
        &self,
        store: &dyn Keystore,
        model: &Model,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Option<String>, String> {
        let call = format!("list({prefix:?}, after {after:?}, limit {limit})");
        let page = match store.list(prefix, after, limit).await {
            Ok(page) => page,
            Err(Error::InvalidArgument(_)) if !portable_text(prefix) || after.is_some_and(|a| !portable_text(a)) => {
                return Ok(None);
            }
            Err(e) => return Err(format!("{call} failed with {e}")),
        };
        let expected = model.matching(prefix, after);
        let shown = |names: &[&String]| -> String {
            let mut out = String::from("[");
            for (i, n) in names.iter().take(6).enumerate() {
                let _ = write!(out, "{}{:?}", if i > 0 { ", " } else { "" }, n);
            }
            if names.len() > 6 {
                let _ = write!(out, ", … {} in all", names.len());
            }
            out.push(']');
            out
        };
        let got: Vec<&String> = page.names.iter().collect();
        if got.len() > limit as usize {
            return Err(format!("{call} returned {} names", got.len()));
        }
        if got.is_empty() && page.next.is_some() {
            return Err(format!("{call} returned no name but set next to {:?}", page.next));
        }
        let k = got.len();
        if expected.len() < k || got[..] != expected[..k] {
            let at = got
                .iter()
                .zip(&expected)
                .position(|(g, e)| g != e)
                .unwrap_or(expected.len());
            let theirs = got.get(at).map_or_else(|| "nothing".to_owned(), |n| format!("{n:?}"));
            let ours = expected
                .get(at)
                .map_or_else(|| "nothing".to_owned(), |n| format!("{n:?}"));
            return Err(format!(
                "{call} returned {} names, {theirs} at position {}, where the model has {ours}: expected the first {k} of {}",
                got.len(),
                at + 1,
                shown(&expected)
            ));
        }
        match &page.next {
            None if k < expected.len() => Err(format!(
                "{call} returned {} with next none, but {} follow: {}",
                shown(&got),
                expected.len() - k,
                shown(&expected[k..])
            )),
            None => Ok(None),
            Some(_) if k == expected.len() => Err(format!("{call} set next to {:?}, but no name follows", page.next)),
            Some(next) if Some(next) != page.names.last() => Err(format!(
                "{call} set next to {next:?}, not to the page's last name {:?}",
                page.names.last()
            )),
            Some(next) => Ok(Some(next.clone())),
        }
    }
}

/// `model.sequential`.
pub(crate) async fn sequential(kit: &Kit) -> Checked {
    let sets = load_sets(kit).await?;
    let runner = Runner {
        kit,
        sets: &sets,
        sizes: kit.record_sizes.clone(),
    };
    let steps_wanted = kit.budget.unwrap_or(DEFAULT_STEPS);
    let run = run_prefix(kit, 'm', 0);
    let mut rng = StdRng::seed_from_u64(kit.seed);
    let mut generator = Gen::new(kit.record_sizes.clone(), run.len());
    let mut model = Model::default();
    let mut steps = Vec::new();
    let mut broken = None;
    for i in 0..steps_wanted as usize {
        let step = generator.step(&mut rng, &model, &run);
        steps.push(step.clone());
        if let Err(why) = runner.check(&run, &mut model, &steps[i]).await {
            broken = Some((i, why));
            break;
        }
    }
    clean(kit, &run, &model).await;
    let Some((at, why)) = broken else {
        return Ok(None);
    };
    steps.truncate(at + 1);
    let failing = steps[at].describe();
    let (minimal, why_minimal) = shrink(kit, &runner, steps, why.clone()).await;
    let mut out = format!(
        "step {} of the sequence of seed {} broke the contract: {failing}: {why}\n",
        at + 1,
        kit.seed,
    );
    let _ = writeln!(
        out,
        "shortest failing sequence found ({} steps; P is the run's prefix, sets are independent instances):",
        minimal.len()
    );
    for (i, step) in minimal.iter().enumerate() {
        let _ = writeln!(out, "  {:>3}. {}", i + 1, step.describe());
    }
    let _ = write!(out, "  step {} fails: {why_minimal}", minimal.len());
    Err(out)
}

/// Looks for a shorter sequence that still breaks the contract: leaves out ever
/// smaller runs of steps, then runs the steps on the first set and with smaller
/// records, each candidate on fresh names. Returns the shortest found, and why it
/// fails.
async fn shrink(kit: &Kit, runner: &Runner<'_>, mut steps: Vec<Step>, mut why: String) -> (Vec<Step>, String) {
    let started = Instant::now();
    let mut replays = 0u32;
    let spent = |replays: u32| replays >= SHRINK_REPLAYS || started.elapsed() > SHRINK_TIME;
    let mut chunk = (steps.len() / 2).max(1);
    while chunk >= 1 && steps.len() > 1 {
        let mut removed = false;
        let mut i = 0;
        while i < steps.len() && !spent(replays) {
            let end = (i + chunk).min(steps.len());
            let mut candidate = steps[..i].to_vec();
            candidate.extend_from_slice(&steps[end..]);
            if candidate.is_empty() {
                break;
            }
            replays += 1;
            match runner.replay(&run_prefix(kit, 'm', replays), &candidate).await {
                Err((at, w)) => {
                    candidate.truncate(at + 1);
                    steps = candidate;
                    why = w;
                    removed = true;
                }
                Ok(()) => i = end,
            }
        }
        if spent(replays) {
            return (steps, why);
        }
        if !removed {
            chunk /= 2;
        }
        chunk = chunk.min(steps.len() / 2).max(usize::from(chunk > 0));
    }
    // Simpler steps: the first set, then smaller records.
    for i in 0..steps.len() {
        let mut simpler: Vec<Step> = Vec::new();
        if steps[i].set != 0 {
            simpler.push(Step {
                set: 0,
                op: steps[i].op.clone(),
            });
        }
        if let Op::Create { name, value } = &steps[i].op {
            for len in SIZES.iter().copied().filter(|l| *l < value.len).take(3) {
                simpler.push(Step {
                    set: steps[i].set,
                    op: Op::Create {
                        name: name.clone(),
                        value: Value { len, ..*value },
                    },
                });
            }
        }
        for candidate_step in simpler {
            if spent(replays) {
                return (steps, why);
            }
            let mut candidate = steps.clone();
            candidate[i] = candidate_step;
            replays += 1;
            if let Err((at, w)) = runner.replay(&run_prefix(kit, 'm', replays), &candidate).await
                && at == steps.len() - 1
            {
                steps = candidate;
                why = w;
                break;
            }
        }
    }
    (steps, why)
}
