//! The cards behind the promise checks: each version's [`Promise`] read from the
//! registry once (a version's card never changes), and each version's last
//! [`PromiseCheck`], redone only when its window changed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::join::LabelJoin;
use super::promise::{Promise, PromiseCheck, PromiseTest, check};
use crate::registry::Registry;

/// A card that could not be read is asked for again after this long.
const RETRY: Duration = Duration::from_secs(60);

/// Promises by version, and the last check of each version held by the join.
pub struct PromiseBook {
    registry: Option<Registry>,
    test: PromiseTest,
    promises: HashMap<String, (Option<Promise>, Instant)>,
    checks: HashMap<String, (u64, PromiseCheck)>,
}

impl PromiseBook {
    /// `registry` None: no cards (only the new-class question is asked).
    pub fn new(registry: Option<Registry>, test: PromiseTest) -> Self {
        Self {
            registry,
            test,
            promises: HashMap::new(),
            checks: HashMap::new(),
        }
    }

    fn promise(&mut self, version: &str) -> Option<&Promise> {
        let stale = match self.promises.get(version) {
            Some((Some(_), _)) => false,
            Some((None, at)) => at.elapsed() >= RETRY,
            None => true,
        };
        if stale {
            let read = self.registry.as_ref().map(|r| r.card(version));
            let promise = match read {
                Some(Ok(card)) => {
                    let promise = Promise::from_card(&card);
                    if promise.is_none() {
                        warn!(
                            version,
                            "Its card holds no held-out evaluation: its late labels are checked for new classes only."
                        );
                    }
                    promise
                }
                Some(Err(err)) => {
                    warn!(version, error = %err, retry_in_s = RETRY.as_secs(), "Cannot read the card of a version the late labels score: checked for new classes only until it can be read.");
                    None
                }
                None => None,
            };
            self.promises
                .insert(version.to_string(), (promise, Instant::now()));
        }
        self.promises.get(version).and_then(|(p, _)| p.as_ref())
    }

    /// The check of every version the join holds, by version; a version whose
    /// window did not change keeps its last check. A version that starts or stops
    /// breaking its promise is logged.
    pub fn checks(&mut self, join: &LabelJoin) -> BTreeMap<String, PromiseCheck> {
        let mut out = BTreeMap::new();
        for (version, revision) in join.revisions() {
            if let Some((checked, last)) = self.checks.get(&version)
                && *checked == revision
            {
                out.insert(version, last.clone());
                continue;
            }
            // Changed: only now is the window copied out of the join.
            let Some(window) = join.window(&version) else {
                continue;
            };
            let test = self.test;
            let promise = self.promise(&version).cloned();
            let now = check(&test, &window, promise.as_ref());
            let before = self.checks.get(&version).map(|(_, c)| c);
            log_change(&version, before, &now);
            self.checks
                .insert(version.clone(), (window.revision, now.clone()));
            out.insert(version, now);
        }
        self.checks.retain(|v, _| out.contains_key(v));
        self.promises.retain(|v, _| out.contains_key(v));
        out
    }
}

fn log_change(version: &str, before: Option<&PromiseCheck>, now: &PromiseCheck) {
    let was = before.is_some_and(|c| c.below_card);
    if now.below_card && !was {
        let worst = now.worst_class.as_ref();
        warn!(
            version,
            pairs = now.pairs,
            promised_macro_f1 = now.promised_macro_f1,
            macro_f1_p = now.macro_f1_p,
            worst_class = worst.map(|c| c.class.as_str()),
            live_recall = worst.map(|c| c.live_recall),
            promised_recall = worst.map(|c| c.promised_recall),
            recall_p = now.recall_p(),
            "Late labels: this version scores significantly below its card (triage_performance_below_card = 1)."
        );
    } else if was && !now.below_card {
        info!(
            version,
            pairs = now.pairs,
            "Late labels: this version is back within its card's promise."
        );
    }
    let was = before.is_some_and(|c| c.new_class);
    if now.new_class && !was {
        warn!(
            version,
            pairs = now.pairs,
            share = now.new_class_share,
            lower_bound = now.new_class_lower,
            "Late labels: classes this version never learned take a measurable share of its labels (triage_performance_new_class = 1)."
        );
    } else if was && !now.new_class {
        info!(
            version,
            share = now.new_class_share,
            "Late labels: new classes no longer take a measurable share."
        );
    }
}
