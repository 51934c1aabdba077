//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs. Pure: no I/O.
//!
//! Leaves are hashed `SHA-256(0x00 ‖ data)` and interior nodes `SHA-256(0x01 ‖ left ‖ right)`.
//! The prefixes are the domain separation that stops an interior node being passed off as a
//! leaf (the second-preimage trick that breaks trees without them, such as `rs_merkle`'s). A
//! tree of `n` leaves splits at the largest power of two *strictly below* `n`, never at the
//! midpoint, so every other RFC 6962 implementation computes the same roots: the tests pin the
//! Certificate Transparency reference vectors.
//!
//! Why a Merkle tree on top of the hash chain: the chain (`prev_receipt_hash`) needs O(n) work to
//! show one receipt belongs to the log or that an old head is a prefix of a new one; the tree
//! does both in O(log n) hashes, so a single receipt can be checked offline in microseconds
//! and a saved checkpoint can be checked against a later one.
//!
//! [`Frontier`] is the writer's view: the O(log n) perfect subtrees on the right edge, enough to
//! compute the root as leaves arrive without keeping every leaf. Proof *generation* needs the
//! leaf hashes (the CLI reads them from the log); proof *verification* needs only the proof.

use sha2::{Digest, Sha256};

/// A SHA-256 output.
pub type Hash = [u8; 32];

/// Proofs longer than this cannot belong to a tree of at most 2^64 leaves (inclusion needs at
/// most 64 hashes, consistency at most 64 + 1); anything longer is refused before any hashing.
pub const MAX_PROOF_HASHES: usize = 65;

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {first} is larger than tree size {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the proof has {found} hashes; a tree of this size needs {expected}")]
    WrongLength { found: usize, expected: usize },
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The Merkle tree hash of a list of leaf hashes (RFC 6962 §2.1 `MTH`).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::new();
    for leaf in leaves {
        f.push(*leaf);
    }
    f.root()
}

/// The audit path of leaf `index` in the tree of all `leaves` (RFC 6962 §2.1.1 `PATH`),
/// ordered from the leaf's sibling up to the root's child.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(index as usize, leaves, &mut out);
    Ok(out)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// The proof that the tree of the first `first` leaves is a prefix of the tree of all
/// `leaves` (RFC 6962 §2.1.2 `PROOF`). Empty when `first` is 0 or equals the size.
pub fn consistency_proof(leaves: &[Hash], first: u64) -> Result<Vec<Hash>, ProofError> {
    let second = leaves.len() as u64;
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    let mut out = Vec::new();
    if first > 0 && first < second {
        subproof(first as usize, leaves, true, &mut out);
    }
    Ok(out)
}

fn subproof(m: usize, d: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !whole {
            out.push(root(d));
        }
        return;
    }
    let k = split(n as u64) as usize;
    if m <= k {
        subproof(m, &d[..k], whole, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            found: proof.len(),
            expected,
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::RootMismatch);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The number of hashes in the inclusion proof of `index` in a tree of `size` leaves: the
/// verification walk of RFC 9162 §2.1.3.2 without the hashing, one hash per step until the
/// walk reaches the root.
fn inclusion_len(index: u64, size: u64) -> usize {
    let (mut f, mut s, mut n) = (index, size - 1, 0usize);
    while s != 0 {
        n += 1;
        if f & 1 == 1 || f == s {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        f >>= 1;
        s >>= 1;
    }
    n
}

/// Checks that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(ProofError::WrongLength {
            found: proof.len(),
            expected: MAX_PROOF_HASHES,
        });
    }
    if first == second || first == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                found: proof.len(),
                expected: 0,
            });
        }
        let ok = if first == 0 {
            *first_root == empty_root()
        } else {
            first_root == second_root
        };
        return if ok {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength {
            found: 0,
            expected: 1,
        });
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                found: proof.len(),
                expected: proof.len() - 1,
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength {
            found: proof.len(),
            expected: proof.len() + 1,
        });
    }
    if fr == *first_root && sr == *second_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The right edge of a growing tree: one perfect-subtree hash per set bit of the size, largest
/// (leftmost) first. Appending is amortised O(1) hashes; the root costs O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree hashes, largest (leftmost) first: one per set bit of the size.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// A frontier from its parts (as [`Frontier::size`] and [`Frontier::nodes`] gave them);
    /// `None` unless there is exactly one node per set bit of `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            // A perfect subtree of the same height is on the left: merge.
            if let Some(left) = self.nodes.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The root of the tree of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        let mut r = *last;
        for left in it {
            r = node_hash(left, &r);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frontier_round_trips_through_its_parts() {
        let mut f = Frontier::new();
        for i in 0..13u8 {
            f.push(leaf_hash(&[i]));
        }
        let back = Frontier::from_parts(f.size(), f.nodes().to_vec()).unwrap();
        assert_eq!(back, f);
        assert_eq!(Frontier::from_parts(13, vec![[0; 32]; 2]), None);
        let mut a = back.clone();
        let mut b = f.clone();
        a.push(leaf_hash(b"x"));
        b.push(leaf_hash(b"x"));
        assert_eq!(a.root(), b.root());
    }

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// The Certificate Transparency reference inputs (RFC 6962 test data).
    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| leaf_hash(&unhex(s)))
        .collect()
    }

    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_match_the_ct_reference_vectors() {
        let leaves = ct_leaves();
        for (n, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..n]), h(want), "size {n}");
        }
    }

    #[test]
    fn proofs_match_the_ct_reference_vectors() {
        let leaves = ct_leaves();
        let root8 = h(CT_ROOTS[8]);
        let cases: [(u64, [&str; 3]); 2] = [
            (
                0,
                [
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                [
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, want) in cases {
            let proof = inclusion_proof(&leaves, index).unwrap();
            assert_eq!(proof, want.map(h).to_vec(), "inclusion of {index}");
            verify_inclusion(&leaves[index as usize], index, 8, &proof, &root8).unwrap();
        }
        let consistency: [(u64, &[&str]); 2] = [
            (
                2,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (first, want) in consistency {
            let proof = consistency_proof(&leaves, first).unwrap();
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(proof, want, "consistency {first} -> 8");
            verify_consistency(first, 8, &h(CT_ROOTS[first as usize]), &root8, &proof).unwrap();
        }
    }

    fn many(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("receipt-{i}").as_bytes()))
            .collect()
    }

    #[test]
    fn frontier_agrees_with_the_recursive_definition() {
        fn mth(d: &[Hash]) -> Hash {
            match d.len() {
                0 => empty_root(),
                1 => d[0],
                n => {
                    let k = split(n as u64) as usize;
                    node_hash(&mth(&d[..k]), &mth(&d[k..]))
                }
            }
        }
        let leaves = many(130);
        let mut f = Frontier::new();
        for n in 0..=leaves.len() {
            assert_eq!(f.root(), mth(&leaves[..n]), "size {n}");
            assert_eq!(f.size(), n as u64);
            if n < leaves.len() {
                f.push(leaves[n]);
            }
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_mangled_ones_do_not() {
        let all = many(70);
        for n in 1..=all.len() {
            let leaves = &all[..n];
            let r = root(leaves);
            for i in 0..n as u64 {
                let proof = inclusion_proof(leaves, i).unwrap();
                assert_eq!(proof.len(), inclusion_len(i, n as u64));
                verify_inclusion(&leaves[i as usize], i, n as u64, &proof, &r).unwrap();
                // Wrong leaf, wrong index, wrong root.
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(&other, i, n as u64, &proof, &r).is_err());
                if n > 1 {
                    let j = (i + 1) % n as u64;
                    assert!(
                        verify_inclusion(&leaves[i as usize], j, n as u64, &proof, &r).is_err()
                    );
                }
                // (A different claimed size can give the same walk — e.g. leaf 0 of 3 and of
                // 4 — which is why the size must come from the signed checkpoint, never from
                // the proof.)
                assert!(
                    verify_inclusion(&leaves[i as usize], i, n as u64, &proof, &other).is_err()
                );
                if !proof.is_empty() {
                    let mut flipped = proof.clone();
                    flipped[proof.len() - 1][7] ^= 1;
                    assert!(
                        verify_inclusion(&leaves[i as usize], i, n as u64, &flipped, &r).is_err()
                    );
                    let short = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(&leaves[i as usize], i, n as u64, short, &r).is_err());
                }
                let mut long = proof.clone();
                long.push([0xab; 32]);
                assert!(verify_inclusion(&leaves[i as usize], i, n as u64, &long, &r).is_err());
            }
        }
        assert_eq!(
            inclusion_proof(&all[..3], 3),
            Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
        );
    }

    #[test]
    fn every_consistency_proof_verifies_and_mangled_ones_do_not() {
        let all = many(70);
        let roots: Vec<Hash> = (0..=all.len()).map(|n| root(&all[..n])).collect();
        for second in 0..=all.len() {
            for first in 0..=second {
                let proof = consistency_proof(&all[..second], first as u64).unwrap();
                let (f, s) = (first as u64, second as u64);
                verify_consistency(f, s, &roots[first], &roots[second], &proof)
                    .unwrap_or_else(|e| panic!("{first} -> {second}: {e}"));
                if first == 0 || first == second {
                    assert!(proof.is_empty());
                    continue;
                }
                // A different old root (a forked or rewritten prefix) is refused.
                assert!(
                    verify_consistency(f, s, &roots[first - 1], &roots[second], &proof).is_err()
                );
                assert!(verify_consistency(f, s, &roots[first], &roots[first], &proof).is_err());
                let mut flipped = proof.clone();
                flipped[0][3] ^= 0x80;
                assert!(verify_consistency(f, s, &roots[first], &roots[second], &flipped).is_err());
                let short = &proof[..proof.len() - 1];
                assert!(verify_consistency(f, s, &roots[first], &roots[second], short).is_err());
                let mut long = proof.clone();
                long.push([0xcd; 32]);
                assert!(verify_consistency(f, s, &roots[first], &roots[second], &long).is_err());
                if proof.len() >= 2 && proof[0] != proof[1] {
                    let mut swapped = proof.clone();
                    swapped.swap(0, 1);
                    assert!(
                        verify_consistency(f, s, &roots[first], &roots[second], &swapped).is_err()
                    );
                }
            }
        }
        // Degenerate cases.
        assert!(verify_consistency(0, 8, &empty_root(), &roots[8], &[]).is_ok());
        assert!(verify_consistency(0, 8, &roots[1], &roots[8], &[]).is_err());
        assert!(verify_consistency(4, 4, &roots[4], &roots[4], &[]).is_ok());
        assert!(verify_consistency(4, 4, &roots[4], &roots[5], &[]).is_err());
        assert!(verify_consistency(4, 4, &roots[4], &roots[4], &[[0; 32]]).is_err());
        assert!(verify_consistency(6, 4, &roots[6], &roots[4], &[]).is_err());
        assert!(verify_consistency(6, 8, &roots[6], &roots[8], &[]).is_err());
        assert_eq!(
            consistency_proof(&all[..3], 4),
            Err(ProofError::SizesOutOfOrder {
                first: 4,
                second: 3
            })
        );
    }

    #[test]
    fn leaves_and_nodes_are_domain_separated() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let node = node_hash(&a, &b);
        // Presenting the concatenated children as a leaf does not give the node hash.
        let mut joined = Vec::new();
        joined.extend_from_slice(&a);
        joined.extend_from_slice(&b);
        assert_ne!(leaf_hash(&joined), node);
        assert_eq!(leaf_hash(b""), h(CT_ROOTS[1]));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }
}
