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
    total: usize,
    per_holder: usize,
    reserve: usize,
    held: Mutex<Held<K>>,
    freed: tokio::sync::Notify,
}

#[derive(Debug)]
struct Held<K> {
    all: usize,
    by_holder: HashMap<K, usize>,
}

impl<K: Eq + Hash + Clone> Shares<K> {
    /// A pool of `total` units of which one holder may hold `per_holder`, and
    /// `reserve` more units that only privileged holders may use.
    pub(crate) fn new(total: usize, per_holder: usize, reserve: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_holder: per_holder.min(total).max(1),
            reserve,
            held: Mutex::new(Held {
                all: 0,
                by_holder: HashMap::new(),
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
            held.all + n <= self.total + self.reserve
        } else {
            mine + n <= self.per_holder && held.all + n <= self.total
        };
        if !fits {
            return None;
        }
        held.all += n;
        *held.by_holder.entry(holder.clone()).or_default() += n;
        Some(Share {
            pool: self.clone(),
            holder: holder.clone(),
            n,
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

    /// How many units `holder` holds.
    pub(crate) fn holds(&self, holder: &K) -> usize {
        lock(&self.held).by_holder.get(holder).copied().unwrap_or(0)
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
        if let Some(mine) = held.by_holder.get_mut(holder) {
            *mine -= n;
            if *mine == 0 {
                held.by_holder.remove(holder);
            }
        }
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
}

impl<K: Eq + Hash + Clone> Share<K> {
    /// Holds `other`'s units too: one share that gives back both.
    pub(crate) fn absorb(&mut self, other: Share<K>) {
        debug_assert!(Arc::ptr_eq(&self.pool, &other.pool) && self.holder == other.holder);
        self.n += other.n;
        std::mem::forget(other);
    }
}

impl<K: Eq + Hash + Clone> Drop for Share<K> {
    fn drop(&mut self) {
        self.pool.give_back(&self.holder, self.n);
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
