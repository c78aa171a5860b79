//! A container's output kept within a byte budget while it is read: the first half of the
//! budget, a ring of the last half, and a count of what fell between them. Memory never holds
//! more than the budget however much the container wrote (`EXECUTION_OUTPUT_MAX_BYTES`).

use std::collections::VecDeque;

/// One stream (stdout or stderr) read under a budget; 0 means no budget.
pub(super) struct BoundedOutput {
    budget: u64,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    left_out: u64,
}

impl BoundedOutput {
    /// An empty output that keeps at most `budget` bytes (0 = everything).
    pub(super) fn new(budget: u64) -> BoundedOutput {
        BoundedOutput {
            budget,
            head: Vec::new(),
            tail: VecDeque::new(),
            left_out: 0,
        }
    }

    fn head_budget(&self) -> usize {
        usize::try_from(self.budget.div_ceil(2)).unwrap_or(usize::MAX)
    }

    fn tail_budget(&self) -> usize {
        usize::try_from(self.budget / 2).unwrap_or(usize::MAX)
    }

    /// Adds what the container wrote next.
    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        if self.budget == 0 {
            self.head.extend_from_slice(bytes);
            return;
        }
        let head_room = self.head_budget().saturating_sub(self.head.len());
        let to_head = head_room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..to_head]);
        bytes = &bytes[to_head..];
        let tail_budget = self.tail_budget();
        if bytes.len() >= tail_budget {
            // The whole ring is replaced: what it held and the start of `bytes` fall out.
            let dropped = self.tail.len() + bytes.len() - tail_budget;
            self.left_out += dropped as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - tail_budget..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(tail_budget);
        self.tail.drain(..overflow);
        self.left_out += overflow as u64;
        self.tail.extend(bytes);
    }

    /// The kept bytes, with one marker line between head and tail when bytes were left out,
    /// and how many were.
    pub(super) fn finish(self) -> (Vec<u8>, u64) {
        let mut kept = self.head;
        if self.left_out > 0 {
            kept.extend_from_slice(marker(self.left_out).as_bytes());
        }
        kept.extend(self.tail);
        (kept, self.left_out)
    }
}

/// The line standing for the bytes left out of the middle of an output.
pub(super) fn marker(left_out: u64) -> String {
    format!("\n[fastlane: {left_out} bytes left out]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(budget: u64, pieces: &[&[u8]]) -> (Vec<u8>, u64) {
        let mut output = BoundedOutput::new(budget);
        for piece in pieces {
            output.push(piece);
        }
        output.finish()
    }

    /// Within the budget the output is kept byte for byte, however it arrives.
    #[test]
    fn within_budget_is_unchanged() {
        assert_eq!(run(10, &[b"abc", b"defghij"]), (b"abcdefghij".to_vec(), 0));
        assert_eq!(run(0, &[b"abc", b"def"]), (b"abcdef".to_vec(), 0));
        assert_eq!(run(10, &[]), (Vec::new(), 0));
    }

    /// Beyond it: the first and last halves with the count of what was between, in whatever
    /// pieces the bytes arrived.
    #[test]
    fn beyond_budget_keeps_head_and_tail() {
        let all: Vec<u8> = (0..100u8).collect();
        let expected = {
            let mut kept = all[..5].to_vec();
            kept.extend_from_slice(marker(90).as_bytes());
            kept.extend_from_slice(&all[95..]);
            (kept, 90)
        };
        assert_eq!(run(10, &[&all]), expected);
        let single: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(run(10, &single), expected);
        let threes: Vec<&[u8]> = all.chunks(3).collect();
        assert_eq!(run(10, &threes), expected);
        let sevens: Vec<&[u8]> = all.chunks(7).collect();
        assert_eq!(run(10, &sevens), expected);
    }

    /// An odd budget gives the head the extra byte; a budget of 1 keeps only the first byte.
    #[test]
    fn odd_budgets() {
        let mut kept = b"abc".to_vec();
        kept.extend_from_slice(marker(3).as_bytes());
        kept.extend_from_slice(b"gh");
        assert_eq!(run(5, &[b"abcdefgh"]), (kept, 3));
        let mut kept = b"a".to_vec();
        kept.extend_from_slice(marker(2).as_bytes());
        assert_eq!(run(1, &[b"a", b"bc"]), (kept, 2));
    }
}
