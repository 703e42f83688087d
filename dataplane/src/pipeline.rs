//! What every path through the engine shares — live workers, `analyze` and the benchmarks:
//! the rule that shards flows over workers, written once.
use crate::flow::FlowKey;
use crate::packet::TcpPacket;

/// The worker (of `workers`) that owns the flow of `p`: the same for both directions and for
/// every vantage, so all views of a flow meet on one engine, whatever path the packet took.
#[inline]
pub fn shard_of(p: &TcpPacket, workers: usize) -> usize {
    shard_of_key(&p.key, workers)
}

/// [`shard_of`] for a key already made.
#[inline]
pub fn shard_of_key(k: &FlowKey, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    // Multiply-shift maps the hash onto 0..workers without the bias or the cost of `%`.
    (((k.shard_hash() >> 32) * workers as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use wirewatch_testkit::craft::TcpSegment;

    use super::*;
    use crate::packet::decode;

    #[test]
    fn both_directions_and_every_vantage_land_on_one_worker() {
        let mut counts = [0usize; 4];
        for port in 1000..3000u16 {
            let a =
                TcpSegment::new("10.0.0.1".parse().unwrap(), port, "10.0.0.2".parse().unwrap(), 80)
                    .frame();
            let b =
                TcpSegment::new("10.0.0.2".parse().unwrap(), 80, "10.0.0.1".parse().unwrap(), port)
                    .frame();
            let pa = decode(&a, a.len() as u32, 0, 0).unwrap();
            let pb = decode(&b, b.len() as u32, 0, 3).unwrap();
            let w = shard_of(&pa, 4);
            assert_eq!(w, shard_of(&pb, 4));
            counts[w] += 1;
        }
        // Spread: no worker gets less than a fifth or more than a third of 2,000 flows.
        assert!(counts.iter().all(|&c| (400..=666).contains(&c)), "{counts:?}");
        let one =
            TcpSegment::new("10.0.0.1".parse().unwrap(), 1, "10.0.0.2".parse().unwrap(), 2).frame();
        assert_eq!(shard_of_key(&decode(&one, 54, 0, 0).unwrap().key, 1), 0);
    }
}
