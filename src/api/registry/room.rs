//! Making room for a load under the registry's limits: [`plan`] (pure) picks the idle models to
//! unload, least recently used first; [`Registry::make_room`] applies it on the load task,
//! marking the victims unloading under the same lock the plan was made under, so two loads
//! never count the same victim.

use super::{Entry, Registry, RegistryLimits, Slot};

/// What one slot means to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seat {
    /// Loaded, unloading, or loading with room given: it takes room.
    pub occupies: bool,
    /// Loaded: it can be unloaded.
    pub evictable: bool,
    pub bytes: u64,
    pub last_used: u64,
}

impl Seat {
    fn of(e: &Entry) -> Self {
        Self {
            occupies: e.occupies(),
            evictable: matches!(e.slot, Slot::Loaded { .. }),
            bytes: e.bytes,
            last_used: e.last_used,
        }
    }
}

/// What the load of one model does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// It fits (or nothing else takes room): load.
    Go,
    /// Unload these (least recently used first), then plan again.
    Unload(Vec<usize>),
    /// It does not fit and nothing can be unloaded yet (the others are loading or unloading):
    /// wait for a change.
    Wait,
}

/// The plan for loading `idx` among `seats`.
pub(super) fn plan(seats: &[Seat], idx: usize, limits: &RegistryLimits) -> Plan {
    let need = seats[idx].bytes;
    let others: Vec<usize> = (0..seats.len())
        .filter(|&i| i != idx && seats[i].occupies)
        .collect();
    let fits = |count: usize, bytes: u64| {
        limits.max_loaded.is_none_or(|m| count < m)
            && limits
                .max_memory
                .is_none_or(|m| bytes.saturating_add(need) <= m)
    };
    let mut count = others.len();
    let mut bytes: u64 = others.iter().map(|&i| seats[i].bytes).sum();
    if count == 0 || fits(count, bytes) {
        return Plan::Go;
    }
    let mut lru: Vec<usize> = others.into_iter().filter(|&i| seats[i].evictable).collect();
    lru.sort_by_key(|&i| seats[i].last_used);
    let mut victims = Vec::new();
    for i in lru {
        victims.push(i);
        count -= 1;
        bytes -= seats[i].bytes;
        if count == 0 || fits(count, bytes) {
            break;
        }
    }
    match victims.is_empty() {
        true => Plan::Wait,
        false => Plan::Unload(victims),
    }
}

impl Registry {
    /// Waits until `idx` (loading, not yet admitted) fits, unloading what [`plan`] says; then
    /// marks it admitted.
    pub(super) async fn make_room(&self, idx: usize) {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (plan, taken) = {
                let mut entries = self.lock();
                let seats: Vec<Seat> = entries.iter().map(Seat::of).collect();
                let plan = plan(&seats, idx, &self.inner.limits);
                let mut taken = Vec::new();
                match &plan {
                    Plan::Go => entries[idx].slot = Slot::Loading { admitted: true },
                    Plan::Unload(victims) => {
                        for &v in victims {
                            let slot = std::mem::replace(&mut entries[v].slot, Slot::Unloading);
                            if let Slot::Loaded { served, released } = slot {
                                taken.push((v, served, released));
                            }
                        }
                    }
                    Plan::Wait => {}
                }
                (plan, taken)
            };
            match plan {
                Plan::Go => return,
                Plan::Unload(_) => {
                    self.inner.changed.notify_waiters();
                    let drains = taken
                        .into_iter()
                        .map(|(v, served, released)| self.drain(v, served, released));
                    futures_util::future::join_all(drains).await;
                }
                Plan::Wait => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(occupies: bool, evictable: bool, bytes: u64, last_used: u64) -> Seat {
        Seat {
            occupies,
            evictable,
            bytes,
            last_used,
        }
    }

    fn limits(max_loaded: Option<usize>, max_memory: Option<u64>) -> RegistryLimits {
        RegistryLimits {
            max_loaded,
            max_memory,
            ..RegistryLimits::default()
        }
    }

    const FREE: Seat = Seat {
        occupies: false,
        evictable: false,
        bytes: 10,
        last_used: 0,
    };

    #[test]
    fn no_limit_or_room_left_loads_at_once() {
        let seats = [seat(true, true, 10, 1), FREE, seat(true, true, 10, 2)];
        assert_eq!(plan(&seats, 1, &limits(None, None)), Plan::Go);
        assert_eq!(plan(&seats, 1, &limits(Some(3), Some(30))), Plan::Go);
    }

    #[test]
    fn the_least_recently_used_goes_first_until_the_count_fits() {
        let seats = [seat(true, true, 10, 5), FREE, seat(true, true, 10, 2)];
        assert_eq!(
            plan(&seats, 1, &limits(Some(2), None)),
            Plan::Unload(vec![2])
        );
        assert_eq!(
            plan(&seats, 1, &limits(Some(1), None)),
            Plan::Unload(vec![2, 0])
        );
    }

    #[test]
    fn bytes_unload_as_many_as_needed() {
        let seats = [
            seat(true, true, 40, 1),
            seat(true, true, 10, 2),
            seat(false, false, 30, 0),
        ];
        // 50 used + 30 needed > 60: the oldest (40 bytes) is enough.
        assert_eq!(
            plan(&seats, 2, &limits(None, Some(60))),
            Plan::Unload(vec![0])
        );
        // > 50 with 30 needed: both go.
        assert_eq!(
            plan(&seats, 2, &limits(None, Some(35))),
            Plan::Unload(vec![0, 1])
        );
        // Larger than the budget alone: every other model goes, then it loads anyway.
        assert_eq!(
            plan(&seats, 2, &limits(None, Some(5))),
            Plan::Unload(vec![0, 1])
        );
        assert_eq!(
            plan(
                &[FREE, seat(false, false, 99, 0)],
                1,
                &limits(None, Some(5))
            ),
            Plan::Go
        );
    }

    #[test]
    fn loading_and_unloading_models_are_waited_for_not_unloaded() {
        let loading = seat(true, false, 10, 9);
        assert_eq!(
            plan(&[loading, FREE], 1, &limits(Some(1), None)),
            Plan::Wait
        );
        // One of two can go; the one still loading is waited for after.
        let seats = [loading, seat(true, true, 10, 3), FREE];
        assert_eq!(
            plan(&seats, 2, &limits(Some(1), None)),
            Plan::Unload(vec![1])
        );
        // A load not yet given room takes none: two such loads do not wait on each other.
        assert_eq!(plan(&[FREE, FREE], 1, &limits(Some(1), None)), Plan::Go);
    }
}
