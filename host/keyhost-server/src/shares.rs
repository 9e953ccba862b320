//! Fair shares of what the server holds for all its clients.
//!
//! Every resource the server shares among clients (connection slots, handshake
//! slots, the memory that request bodies are read into, requests in flight) is a
//! [`Shares`] pool: a total that all holders together may use, a share that one
//! holder (an address, a network, an identity) may use, and a reserve on top of
//! the total that only privileged holders (the admin) may use. So no one client,
//! known or not, can take a resource whole, and the admin can still reach a server
//! that everyone else has filled.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lock;

/// A pool of `total` units shared by holders of type `K`.
#[derive(Debug)]
pub(crate) struct Shares<K: Eq + Hash> {
    held: Mutex<Held<K>>,
    freed: tokio::sync::Notify,
}

#[derive(Debug)]
struct Held<K> {
    /// What all holders together may hold.
    total: usize,
    /// What one holder may hold.
    per_holder: usize,
    /// What privileged holders may hold beyond the total.
    reserve: usize,
    all: usize,
    by_holder: HashMap<K, usize>,
    /// How many holders hold each count (so the biggest is known without a scan).
    by_count: std::collections::BTreeMap<usize, usize>,
    /// The units that may be asked back (see [`Shares::try_take_evicting`]), by
    /// holder, oldest first.
    evictable: HashMap<K, std::collections::VecDeque<std::sync::Weak<Evictable>>>,
}

impl<K: Eq + Hash + Clone> Held<K> {
    /// Changes what `holder` holds by `add` units and takes `remove` away, keeping
    /// the index of counts.
    fn change(&mut self, holder: &K, add: usize, remove: usize) {
        let old = self.by_holder.get(holder).copied().unwrap_or(0);
        let new = (old + add).saturating_sub(remove);
        if old == new {
            return;
        }
        if old > 0
            && let Some(n) = self.by_count.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.by_count.remove(&old);
            }
        }
        if new > 0 {
            *self.by_count.entry(new).or_default() += 1;
            self.by_holder.insert(holder.clone(), new);
        } else {
            self.by_holder.remove(holder);
            self.evictable.remove(holder);
        }
    }

    /// What the biggest holder holds.
    fn most(&self) -> usize {
        self.by_count.last_key_value().map_or(0, |(n, _)| *n)
    }
}

impl<K: Eq + Hash + Clone> Shares<K> {
    /// A pool of `total` units of which one holder may hold `per_holder`, and
    /// `reserve` more units that only privileged holders may use.
    pub(crate) fn new(total: usize, per_holder: usize, reserve: usize) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(Held {
                total,
                per_holder: per_holder.min(total).max(1),
                reserve,
                all: 0,
                by_holder: HashMap::new(),
                by_count: std::collections::BTreeMap::new(),
                evictable: HashMap::new(),
            }),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Takes `n` units for `holder`, unless that would take the holder past its
    /// share or the pool past its total (past the reserve too, for a privileged
    /// holder, which has no share of its own to keep to).
    pub(crate) fn try_take(self: &Arc<Self>, holder: &K, n: usize, privileged: bool) -> Option<Share<K>> {
        let mut held = lock(&self.held);
        let mine = held.by_holder.get(holder).copied().unwrap_or(0);
        let fits = if privileged {
            held.all + n <= held.total + held.reserve
        } else {
            mine + n <= held.per_holder && held.all + n <= held.total
        };
        if !fits {
            return None;
        }
        held.all += n;
        held.change(holder, n, 0);
        Some(Share {
            pool: self.clone(),
            holder: holder.clone(),
            n,
            evictable: None,
        })
    }

    /// [`Shares::try_take`], waiting up to `wait` for units to be given back.
    pub(crate) async fn take(
        self: &Arc<Self>,
        holder: &K,
        n: usize,
        privileged: bool,
        wait: Duration,
    ) -> Option<Share<K>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            if let Some(share) = self.try_take(holder, n, privileged) {
                return Some(share);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.try_take(holder, n, privileged);
            }
        }
    }

    /// Takes one unit for `holder` that can be asked back (the returned `Notify`
    /// is notified then, and the holder should let go of what the unit stands
    /// for as soon as it can). When the pool is full but `holder` is under its
    /// share, the oldest such unit of the holder that holds the most is asked
    /// back, if that holder holds at least two more than `holder`: the unit counts
    /// as given back at once, and `holder` takes it. So a pool that anyone can take
    /// from (clients without an identity the server knows, handshakes) cannot be
    /// filled by a few holders against a newcomer; it ends up shared evenly by
    /// those who want it.
    pub(crate) fn try_take_evicting(self: &Arc<Self>, holder: &K) -> Option<(Share<K>, Arc<tokio::sync::Notify>)> {
        let mut share = match self.try_take(holder, 1, false) {
            Some(share) => share,
            None if self.evict_for(holder) => self.try_take(holder, 1, false)?,
            None => return None,
        };
        let notify = self.make_evictable(&mut share);
        Some((share, notify))
    }

    /// Takes one unit for `holder` past the total and any share: for a holder
    /// that has had a unit asked back for it in a pool taken together with this
    /// one, whose unit here is given back when the holder asked lets go.
    pub(crate) fn force_take(self: &Arc<Self>, holder: &K) -> Share<K> {
        let mut held = lock(&self.held);
        held.all += 1;
        held.change(holder, 1, 0);
        Share {
            pool: self.clone(),
            holder: holder.clone(),
            n: 1,
            evictable: None,
        }
    }

    /// Makes the unit `share` holds one that a newcomer may ask back (see
    /// [`Shares::try_take_evicting`]): the returned `Notify` is notified then.
    pub(crate) fn make_evictable(&self, share: &mut Share<K>) -> Arc<tokio::sync::Notify> {
        let evictable = Arc::new(Evictable {
            notify: Arc::new(tokio::sync::Notify::new()),
            asked: std::sync::atomic::AtomicBool::new(false),
        });
        let mut held = lock(&self.held);
        let queue = held.evictable.entry(share.holder.clone()).or_default();
        // Units given back leave dead entries; drop them as the queue grows.
        queue.retain(|w| w.strong_count() > 0);
        queue.push_back(Arc::downgrade(&evictable));
        let notify = evictable.notify.clone();
        share.evictable = Some(evictable);
        notify
    }

    /// Asks the oldest evictable unit of the biggest holder back for `holder`, if
    /// `holder` is under its share and the biggest holder holds at least two more
    /// (call it when the pool is full): the unit counts as given back from now.
    /// Returns whether one was asked back.
    fn evict_for(&self, holder: &K) -> bool {
        let mut held = lock(&self.held);
        let mine = held.by_holder.get(holder).copied().unwrap_or(0);
        // No holder holds more than its share: none can hold two more than this.
        if mine + 2 > held.per_holder {
            return false;
        }
        loop {
            // Refused at once, without a look at the holders, when no one holds
            // two more (as when the pool is full of holders of one each).
            if held.most() < mine + 2 {
                return false;
            }
            let evictable = |held: &Held<K>, h: &K| held.evictable.get(h).is_some_and(|q| !q.is_empty());
            let most = held.most();
            // A biggest holder, or (if none of them has units that may be asked
            // back) the biggest of those that have.
            let victim = held
                .by_holder
                .iter()
                .find(|(h, n)| **n == most && evictable(&held, h))
                .or_else(|| {
                    held.by_holder
                        .iter()
                        .filter(|(h, _)| evictable(&held, h))
                        .max_by_key(|(_, n)| **n)
                })
                .map(|(h, n)| (h.clone(), *n));
            let Some((victim, most)) = victim else {
                return false;
            };
            if most < mine + 2 {
                return false;
            }
            let queue = held.evictable.entry(victim.clone()).or_default();
            let mut asked = None;
            while let Some(weak) = queue.pop_front() {
                if let Some(unit) = weak.upgrade()
                    && !unit.asked.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    asked = Some(unit);
                    break;
                }
            }
            let Some(unit) = asked else {
                // Only units already given back: look at the next biggest.
                held.evictable.remove(&victim);
                continue;
            };
            held.all -= 1;
            held.change(&victim, 0, 1);
            unit.notify.notify_one();
            drop(held);
            self.freed.notify_waiters();
            return true;
        }
    }

    /// How many units one holder may hold.
    pub(crate) fn per_holder(&self) -> usize {
        lock(&self.held).per_holder
    }

    /// Gives the pool new sizes (a reload changed them). What holders hold now
    /// counts against them: a pool made smaller takes nothing back, but lets no
    /// one take more until what is held fits.
    pub(crate) fn resize(&self, total: usize, per_holder: usize, reserve: usize) {
        let mut held = lock(&self.held);
        held.total = total;
        held.per_holder = per_holder.min(total).max(1);
        held.reserve = reserve;
        drop(held);
        self.freed.notify_waiters();
    }

    /// How many units `holder` holds.
    pub(crate) fn holds(&self, holder: &K) -> usize {
        lock(&self.held).by_holder.get(holder).copied().unwrap_or(0)
    }

    /// Checks the index of counts against the counts (for tests).
    #[cfg(test)]
    pub(crate) fn check_index(&self) {
        let held = lock(&self.held);
        let mut counts = std::collections::BTreeMap::new();
        for n in held.by_holder.values() {
            *counts.entry(*n).or_insert(0usize) += 1;
        }
        assert_eq!(counts, held.by_count);
        assert_eq!(held.by_holder.values().sum::<usize>(), held.all);
    }

    /// How many units `holder` holds, and all holders together.
    #[cfg(test)]
    pub(crate) fn held(&self, holder: &K) -> (usize, usize) {
        let held = lock(&self.held);
        (held.by_holder.get(holder).copied().unwrap_or(0), held.all)
    }

    fn give_back(&self, holder: &K, n: usize) {
        let mut held = lock(&self.held);
        held.all -= n;
        held.change(holder, 0, n);
        drop(held);
        self.freed.notify_waiters();
    }
}

/// Units of a [`Shares`] pool held by one holder, given back when dropped.
#[derive(Debug)]
pub(crate) struct Share<K: Eq + Hash + Clone> {
    pool: Arc<Shares<K>>,
    holder: K,
    n: usize,
    /// Set when the unit may be asked back, and so given back early.
    evictable: Option<Arc<Evictable>>,
}

/// A unit that a newcomer may ask back.
#[derive(Debug)]
pub(crate) struct Evictable {
    notify: Arc<tokio::sync::Notify>,
    /// Whether it was asked back (and counted as given back then).
    asked: std::sync::atomic::AtomicBool,
}

impl<K: Eq + Hash + Clone> Share<K> {
    /// Holds `other`'s units too: one share that gives back both.
    pub(crate) fn absorb(&mut self, other: Share<K>) {
        debug_assert!(Arc::ptr_eq(&self.pool, &other.pool) && self.holder == other.holder);
        debug_assert!(self.evictable.is_none() && other.evictable.is_none());
        self.n += other.n;
        std::mem::forget(other);
    }
}

impl<K: Eq + Hash + Clone> Drop for Share<K> {
    fn drop(&mut self) {
        let asked = self
            .evictable
            .as_ref()
            .is_some_and(|e| e.asked.swap(true, std::sync::atomic::Ordering::SeqCst));
        if !asked {
            self.pool.give_back(&self.holder, self.n);
        }
    }
}

/// The network an address belongs to, for shares by network: its /24 (IPv4) or
/// /48 (IPv6, what a provider hands one site). A handful of addresses of one
/// network share one network share, so "a handful of addresses" is not more.
pub(crate) fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let mut octets = v6.octets();
                octets[6..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

pub use keyhost_config::Network;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_never_takes_more_than_its_share_and_the_reserve_is_the_admins() {
        let pool = Shares::new(10, 4, 2);
        let a: Vec<_> = (0..6).filter_map(|_| pool.try_take(&"a", 1, false)).collect();
        assert_eq!(a.len(), 4, "a's share");
        let b: Vec<_> = (0..6).filter_map(|_| pool.try_take(&"b", 1, false)).collect();
        assert_eq!(b.len(), 4);
        let c: Vec<_> = (0..6).filter_map(|_| pool.try_take(&"c", 1, false)).collect();
        assert_eq!(c.len(), 2, "the total");
        let admin: Vec<_> = (0..6).filter_map(|_| pool.try_take(&"admin", 1, true)).collect();
        assert_eq!(admin.len(), 2, "the reserve");
        assert_eq!(pool.held(&"a"), (4, 12));
        drop(a);
        assert_eq!(pool.held(&"a"), (0, 8));
        assert!(pool.try_take(&"c", 2, false).is_some());
    }

    #[test]
    fn a_resized_pool_counts_what_is_held_already() {
        let pool = Shares::new(10, 10, 0);
        let held: Vec<_> = (0..8).filter_map(|_| pool.try_take(&"a", 1, false)).collect();
        pool.resize(6, 6, 0);
        assert!(pool.try_take(&"b", 1, false).is_none(), "8 held against a total of 6");
        drop(held);
        assert_eq!(pool.held(&"a"), (0, 0));
        let again: Vec<_> = (0..10).filter_map(|_| pool.try_take(&"b", 1, false)).collect();
        assert_eq!(again.len(), 6, "the new total");
    }

    #[tokio::test]
    async fn a_waiting_holder_gets_what_another_gives_back() {
        let pool = Shares::new(4, 4, 0);
        let held = pool.try_take(&"a", 4, false).unwrap();
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.take(&"b", 2, false, Duration::from_secs(5)).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiter.await.unwrap());
        assert!(pool.take(&"c", 5, false, Duration::from_millis(10)).await.is_none());
    }

    /// Holds a unit taken with `take_evicting` until it is asked back.
    fn hold_until_asked(share: Share<&'static str>, evict: Arc<tokio::sync::Notify>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            evict.notified().await;
            drop(share);
        })
    }

    #[tokio::test]
    async fn a_newcomer_to_a_full_pool_takes_a_unit_from_the_biggest_holder() {
        let pool = Shares::new(8, 2, 0);
        let mut held = Vec::new();
        for holder in ["a", "b", "c", "d"] {
            for _ in 0..2 {
                let (share, evict) = pool.try_take_evicting(&holder).unwrap();
                held.push(hold_until_asked(share, evict));
            }
        }
        assert_eq!(pool.held(&"a").1, 8, "full");
        // A holder at its share asks nothing back.
        assert!(pool.try_take_evicting(&"a").is_none());
        // A newcomer gets one of the biggest holder's units.
        let (e, _ask_e) = pool.try_take_evicting(&"e").unwrap();
        assert_eq!(pool.held(&"e"), (1, 8), "the unit asked back counts as given back");
        // A second newcomer too, from another holder of two.
        let (f, _ask_f) = pool.try_take_evicting(&"f").unwrap();
        assert_eq!(pool.held(&"f"), (1, 8));
        // A burst of newcomers levels the holders; it does not drain one of them.
        let burst: Vec<_> = ["g", "h", "i"]
            .iter()
            .filter_map(|h| pool.try_take_evicting(h))
            .collect();
        assert_eq!(burst.len(), 2, "the third finds everyone at one");
        let counts: Vec<_> = ["a", "b", "c", "d"].iter().map(|h| pool.holds(h)).collect();
        assert_eq!(counts, [1, 1, 1, 1]);
        // The newcomers' second units would leave someone with less: none is taken.
        assert!(pool.try_take_evicting(&"e").is_none());
        drop(burst);
        drop((e, f));
    }

    /// Random arrivals of random holders into a small pool whose units are given
    /// back when asked: the pool never goes past its total, and whoever is refused
    /// holds at most one unit less than anyone holding an evictable unit.
    #[tokio::test]
    async fn random_arrivals_end_evenly_shared() {
        const HOLDERS: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _round in 0..20 {
            let total = 2 + next(12) as usize;
            let per = 1 + next(total as u64) as usize;
            let pool = Shares::new(total, per, 0);
            let mut tasks = Vec::new();
            for _ in 0..40 {
                let holder = HOLDERS[next(HOLDERS.len() as u64) as usize];
                match pool.try_take_evicting(&holder) {
                    Some((share, evict)) => {
                        tasks.push(hold_until_asked(share, evict));
                        // The unit asked back is given back.
                        tokio::task::yield_now().await;
                        tokio::task::yield_now().await;
                    }
                    None => {
                        let mine = pool.holds(&holder);
                        let most = HOLDERS.iter().map(|h| pool.holds(h)).max().unwrap_or(0);
                        assert!(
                            mine == per.min(total) || most <= mine + 1,
                            "{holder} refused with {mine} while another holds {most} (total {total}, share {per})"
                        );
                    }
                }
                assert!(pool.held(&holder).1 <= total, "past the total");
                pool.check_index();
            }
            for task in tasks {
                task.abort();
            }
        }
    }

    #[test]
    fn networks() {
        assert_eq!(
            network_of("192.0.2.77".parse().unwrap()),
            "192.0.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network_of("::ffff:192.0.2.77".parse().unwrap()),
            "192.0.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network_of("2001:db8:1:2:3::1".parse().unwrap()),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network_of("2001:db8:1:ff00::1".parse().unwrap()),
            "2001:db8:1::".parse::<IpAddr>().unwrap(),
            "one /48"
        );
        let net = Network::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("203.0.113.1".parse().unwrap())
        );
        assert!(Network::parse("::1").unwrap().contains("::1".parse().unwrap()));
        let mapped = Network::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains("10.200.0.1".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.0.0.9".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129"] {
            assert!(Network::parse(bad).is_none(), "{bad}");
        }
    }
}
