//! TCP sequence numbers with wrap-around comparison (RFC 9293 §3.4). All seq/ack arithmetic in
//! wirewatch goes through this type; raw `u32` comparisons on sequence space are a bug.
use std::cmp::Ordering;
use std::{fmt, ops};

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// Signed distance from `other` to `self` (positive: `self` is after `other`).
    #[inline]
    pub fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
    #[inline]
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if self > other {
            self
        } else {
            other
        }
    }
    #[inline]
    pub fn min_seq(self, other: SeqNumber) -> SeqNumber {
        if self < other {
            self
        } else {
            other
        }
    }
    /// Whether `self` lies in `[start, start + len)`.
    #[inline]
    pub fn in_window(self, start: SeqNumber, len: u32) -> bool {
        let d = self.0.wrapping_sub(start.0);
        d < len
    }
}

impl PartialOrd for SeqNumber {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.diff(*other).cmp(&0))
    }
}

impl ops::Add<u32> for SeqNumber {
    type Output = SeqNumber;
    #[inline]
    fn add(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs))
    }
}

impl ops::Sub<u32> for SeqNumber {
    type Output = SeqNumber;
    #[inline]
    fn sub(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(rhs))
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::SeqNumber as S;

    #[test]
    fn wraps() {
        assert!(S(5) > S(u32::MAX - 5));
        assert!(S(u32::MAX) < S(0));
        assert_eq!(S(3).diff(S(u32::MAX)), 4);
        assert_eq!(S(u32::MAX) + 2, S(1));
        assert!(S(1).in_window(S(u32::MAX), 5));
        assert!(!S(10).in_window(S(u32::MAX), 5));
    }
}
