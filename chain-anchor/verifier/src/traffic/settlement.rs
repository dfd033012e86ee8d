//! An epoch's settlement: the volume report the nodes fold their receipts
//! into (shaped like Stratos' `MsgVolumeReport`: epoch, reference, wallet
//! volumes sorted by address, node volumes, fees, the hash of the receipts it
//! covers), the nodes' signatures on it, and the ledger entry (kind 3) that
//! records it. An auditor rebuilds a report from the receipts alone
//! ([`VolumeReport::from_receipts`]) and compares.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Address, Receipt, wei};
use crate::{Hash, VerifyError};

pub const REPORT_MAGIC: [u8; 4] = *b"SDBS";
pub const REPORT_VERSION: u8 = 1;
/// Domain tags: a report hash, a fold of receipt hashes.
pub const TAG_REPORT: u8 = 0x31;
pub const TAG_RECEIPTS: u8 = 0x32;

/// What one payer caused in the epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletVolume {
    pub payer: Address,
    pub receipts: u64,
    pub bytes: u64,
    pub documents: u64,
    #[serde(with = "wei::string")]
    pub fee: u128,
}

/// What one node served in the epoch: its receipts `first_sequence ..=
/// last_sequence`, all of the epoch, none left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVolume {
    #[serde(with = "crate::hex_serde::hash")]
    pub node_key: [u8; 32],
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// [`receipts_hash`] of those receipts, in sequence order.
    #[serde(with = "crate::hex_serde::hash")]
    pub receipts_hash: Hash,
    pub bytes: u64,
    pub documents: u64,
    #[serde(with = "wei::string")]
    pub fee: u128,
}

impl NodeVolume {
    pub fn receipts(&self) -> u64 {
        self.last_sequence + 1 - self.first_sequence
    }
}

/// An epoch's volume report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeReport {
    pub version: u8,
    #[serde(with = "crate::hex_serde::hash")]
    pub cluster_id: Hash,
    pub epoch: u64,
    /// Sorted by payer address, one per payer.
    pub wallet_volumes: Vec<WalletVolume>,
    /// Sorted by node key, one per node that served anything.
    pub node_volumes: Vec<NodeVolume>,
    #[serde(with = "wei::string")]
    pub total_fee: u128,
    /// [`fold`] of the node volumes' receipt hashes, in order.
    #[serde(with = "crate::hex_serde::hash")]
    pub receipts_hash: Hash,
}

/// `SHA-256(0x32 ‖ receipt hash ‖ …)`, the receipts in sequence order.
pub fn receipts_hash(receipts: &[Receipt]) -> Hash {
    let hashes: Vec<Hash> = receipts.iter().map(Receipt::hash).collect();
    fold(&hashes)
}

/// `SHA-256(0x32 ‖ h1 ‖ h2 ‖ …)`.
pub fn fold(hashes: &[Hash]) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_RECEIPTS]);
    for x in hashes {
        h.update(x);
    }
    h.finalize().into()
}

/// Adds to `payer`'s wallet volume in `wallets`.
fn add_volume(wallets: &mut std::collections::BTreeMap<Address, WalletVolume>, add: &WalletVolume) {
    let w = wallets.entry(add.payer).or_insert(WalletVolume {
        payer: add.payer,
        receipts: 0,
        bytes: 0,
        documents: 0,
        fee: 0,
    });
    w.receipts = w.receipts.saturating_add(add.receipts);
    w.bytes = w.bytes.saturating_add(add.bytes);
    w.documents = w.documents.saturating_add(add.documents);
    w.fee = w.fee.saturating_add(add.fee);
}

fn refused(why: String) -> VerifyError {
    VerifyError::BadSettlement(why)
}

/// One node's volume of an epoch, built a receipt at a time with every check
/// of [`VolumeReport::from_own_receipts`]: a node keeps one beside its receipt
/// log for each epoch it issues receipts in, so that closing the epoch does
/// not read its receipts back. [`VolumeBuilder::report`] is what
/// `from_own_receipts` gives for the same receipts.
#[derive(Clone)]
pub struct VolumeBuilder {
    cluster_id: Hash,
    epoch: u64,
    node_key: [u8; 32],
    /// The totals so far (its `receipts_hash` is set by `node_volume`).
    volume: Option<NodeVolume>,
    /// [`fold`] of the receipt hashes so far, not finalized.
    hashes: Sha256,
    wallets: std::collections::BTreeMap<Address, WalletVolume>,
}

impl VolumeBuilder {
    /// An empty volume of `node_key` in `epoch` of `cluster_id`.
    pub fn new(cluster_id: Hash, epoch: u64, node_key: [u8; 32]) -> VolumeBuilder {
        let mut hashes = Sha256::new();
        hashes.update([TAG_RECEIPTS]);
        VolumeBuilder {
            cluster_id,
            epoch,
            node_key,
            volume: None,
            hashes,
            wallets: Default::default(),
        }
    }

    pub fn cluster_id(&self) -> Hash {
        self.cluster_id
    }

    /// The sequences added so far, first and last (`None`: none yet).
    pub fn sequences(&self) -> Option<(u64, u64)> {
        self.volume
            .as_ref()
            .map(|v| (v.first_sequence, v.last_sequence))
    }

    /// Adds the next receipt, whose [`Receipt::hash`] is `hash`: its fee,
    /// node, cluster, epoch and sequence (the one after the last added) are
    /// checked; a receipt that fails changes nothing.
    pub fn add(&mut self, r: &Receipt, hash: &Hash) -> Result<(), VerifyError> {
        r.check_fee()?;
        self.add_checked(r, hash)
    }

    fn add_checked(&mut self, r: &Receipt, hash: &Hash) -> Result<(), VerifyError> {
        let at = || {
            format!(
                "receipt {}#{}",
                hex::encode(&self.node_key[..4]),
                r.sequence
            )
        };
        if r.node_key != self.node_key {
            return Err(refused(format!("{} is signed by another node", at())));
        }
        if r.cluster_id != self.cluster_id || r.epoch != self.epoch {
            return Err(refused(format!(
                "{} is of epoch {} of another cluster or epoch (settling {})",
                at(),
                r.epoch,
                self.epoch
            )));
        }
        match &mut self.volume {
            Some(v) if r.sequence != v.last_sequence.wrapping_add(1) => {
                return Err(refused(format!(
                    "{} follows #{}: the sequences have a gap or a repeat",
                    at(),
                    v.last_sequence
                )));
            }
            Some(v) => {
                v.last_sequence = r.sequence;
                v.bytes = v.bytes.saturating_add(r.bytes);
                v.documents = v.documents.saturating_add(r.documents);
                v.fee = v.fee.saturating_add(r.fee);
            }
            None => {
                self.volume = Some(NodeVolume {
                    node_key: self.node_key,
                    first_sequence: r.sequence,
                    last_sequence: r.sequence,
                    receipts_hash: [0; 32],
                    bytes: r.bytes,
                    documents: r.documents,
                    fee: r.fee,
                });
            }
        }
        self.hashes.update(hash);
        let one = WalletVolume {
            payer: r.payer,
            receipts: 1,
            bytes: r.bytes,
            documents: r.documents,
            fee: r.fee,
        };
        add_volume(&mut self.wallets, &one);
        Ok(())
    }

    /// The node's volume so far, with the hash of its receipts (`None`: no
    /// receipt added).
    pub fn node_volume(&self) -> Option<NodeVolume> {
        let mut volume = self.volume.clone()?;
        volume.receipts_hash = self.hashes.clone().finalize().into();
        Some(volume)
    }

    /// The report of this node's receipts so far.
    pub fn report(&self) -> VolumeReport {
        VolumeReport::assemble(
            self.cluster_id,
            self.epoch,
            self.wallets.clone(),
            self.node_volume().into_iter().collect(),
        )
    }
}

impl VolumeReport {
    /// The report of `epoch` built from each serving node's receipts of the
    /// epoch (in sequence order), checking every receipt: its signature and
    /// fee, its cluster, epoch and node, and that the sequences follow each
    /// other without a gap or a repeat.
    pub fn from_receipts(
        cluster_id: Hash,
        epoch: u64,
        nodes: &[([u8; 32], Vec<Receipt>)],
    ) -> Result<VolumeReport, VerifyError> {
        Self::build(cluster_id, epoch, nodes, true)
    }

    /// [`VolumeReport::from_receipts`] for a node's own receipts, read from
    /// its own log: every check but the node's signature on each, which is
    /// most of the cost (the auditor checks those).
    pub fn from_own_receipts(
        cluster_id: Hash,
        epoch: u64,
        node_key: [u8; 32],
        receipts: Vec<Receipt>,
    ) -> Result<VolumeReport, VerifyError> {
        Self::build(cluster_id, epoch, &[(node_key, receipts)], false)
    }

    fn build(
        cluster_id: Hash,
        epoch: u64,
        nodes: &[([u8; 32], Vec<Receipt>)],
        check_signatures: bool,
    ) -> Result<VolumeReport, VerifyError> {
        let mut wallets: std::collections::BTreeMap<Address, WalletVolume> = Default::default();
        let mut node_volumes = Vec::new();
        let mut checker = super::ReceiptChecker::default();
        for (key, receipts) in nodes {
            let mut volume = VolumeBuilder::new(cluster_id, epoch, *key);
            for r in receipts {
                if check_signatures {
                    checker.verify(r)?;
                } else {
                    r.check_fee()?;
                }
                volume.add_checked(r, &r.hash())?;
            }
            node_volumes.extend(volume.node_volume());
            for w in volume.wallets.values() {
                add_volume(&mut wallets, w);
            }
        }
        let report = VolumeReport::assemble(cluster_id, epoch, wallets, node_volumes);
        if report
            .node_volumes
            .windows(2)
            .any(|w| w[0].node_key == w[1].node_key)
        {
            return Err(refused("a node is listed twice".into()));
        }
        Ok(report)
    }

    /// A report of these volumes: sorted, with its totals and receipts hash.
    fn assemble(
        cluster_id: Hash,
        epoch: u64,
        wallets: std::collections::BTreeMap<Address, WalletVolume>,
        mut node_volumes: Vec<NodeVolume>,
    ) -> VolumeReport {
        node_volumes.sort_by_key(|a| a.node_key);
        let total_fee = node_volumes
            .iter()
            .fold(0u128, |s, n| s.saturating_add(n.fee));
        let receipts_hash = fold(
            &node_volumes
                .iter()
                .map(|n| n.receipts_hash)
                .collect::<Vec<_>>(),
        );
        VolumeReport {
            version: REPORT_VERSION,
            cluster_id,
            epoch,
            wallet_volumes: wallets.into_values().collect(),
            node_volumes,
            total_fee,
            receipts_hash,
        }
    }

    /// One report of the nodes' own reports (each built by a node from its
    /// receipts with [`VolumeReport::from_receipts`]): their node volumes
    /// side by side, their wallet volumes summed per payer.
    pub fn merge(
        cluster_id: Hash,
        epoch: u64,
        parts: &[VolumeReport],
    ) -> Result<VolumeReport, VerifyError> {
        let mut wallets: std::collections::BTreeMap<Address, WalletVolume> = Default::default();
        let mut node_volumes = Vec::new();
        for part in parts {
            part.check()?;
            if part.cluster_id != cluster_id || part.epoch != epoch {
                return Err(refused(format!(
                    "a part of epoch {} is not of epoch {epoch} of this cluster",
                    part.epoch
                )));
            }
            node_volumes.extend(part.node_volumes.iter().cloned());
            for w in &part.wallet_volumes {
                add_volume(&mut wallets, w);
            }
        }
        let merged = VolumeReport::assemble(cluster_id, epoch, wallets, node_volumes);
        merged.check()?;
        Ok(merged)
    }

    /// Checks the report holds together: sorted and unique, totals equal
    /// on both sides, and the receipts hash the fold of the nodes'.
    pub fn check(&self) -> Result<(), VerifyError> {
        if self.version != REPORT_VERSION {
            return Err(refused(format!("unknown report version {}", self.version)));
        }
        if self
            .wallet_volumes
            .windows(2)
            .any(|w| w[0].payer >= w[1].payer)
        {
            return Err(refused(
                "wallet volumes are not sorted by payer, once each".into(),
            ));
        }
        if self
            .node_volumes
            .windows(2)
            .any(|w| w[0].node_key >= w[1].node_key)
        {
            return Err(refused(
                "node volumes are not sorted by node key, once each".into(),
            ));
        }
        let sum = |it: &mut dyn Iterator<Item = (u64, u64, u64, u128)>| {
            it.fold((0u64, 0u64, 0u64, 0u128), |s, x| {
                (
                    s.0.saturating_add(x.0),
                    s.1.saturating_add(x.1),
                    s.2.saturating_add(x.2),
                    s.3.saturating_add(x.3),
                )
            })
        };
        let wallets = sum(&mut self
            .wallet_volumes
            .iter()
            .map(|w| (w.receipts, w.bytes, w.documents, w.fee)));
        let nodes = sum(&mut self.node_volumes.iter().map(|n| {
            if n.last_sequence < n.first_sequence {
                (u64::MAX, 0, 0, 0)
            } else {
                (n.receipts(), n.bytes, n.documents, n.fee)
            }
        }));
        if wallets != nodes {
            return Err(refused(format!(
                "the wallets' totals {wallets:?} (receipts, bytes, documents, fee) are not the nodes' {nodes:?}"
            )));
        }
        if nodes.3 != self.total_fee {
            return Err(refused(format!(
                "total fee {} is not the sum of the volumes' fees {}",
                self.total_fee, nodes.3
            )));
        }
        let folded = fold(
            &self
                .node_volumes
                .iter()
                .map(|n| n.receipts_hash)
                .collect::<Vec<_>>(),
        );
        if folded != self.receipts_hash {
            return Err(refused(
                "the receipts hash is not the fold of the nodes' receipt hashes".into(),
            ));
        }
        Ok(())
    }

    /// The canonical bytes: magic, version, cluster id, epoch, the wallet
    /// volumes and node volumes (each count-prefixed), the total fee and the
    /// receipts hash; integers big-endian, wei as 16 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&REPORT_MAGIC);
        out.push(self.version);
        out.extend_from_slice(&self.cluster_id);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&(self.wallet_volumes.len() as u64).to_be_bytes());
        for w in &self.wallet_volumes {
            out.extend_from_slice(&w.payer.0);
            out.extend_from_slice(&w.receipts.to_be_bytes());
            out.extend_from_slice(&w.bytes.to_be_bytes());
            out.extend_from_slice(&w.documents.to_be_bytes());
            out.extend_from_slice(&w.fee.to_be_bytes());
        }
        out.extend_from_slice(&(self.node_volumes.len() as u64).to_be_bytes());
        for n in &self.node_volumes {
            out.extend_from_slice(&n.node_key);
            out.extend_from_slice(&n.first_sequence.to_be_bytes());
            out.extend_from_slice(&n.last_sequence.to_be_bytes());
            out.extend_from_slice(&n.receipts_hash);
            out.extend_from_slice(&n.bytes.to_be_bytes());
            out.extend_from_slice(&n.documents.to_be_bytes());
            out.extend_from_slice(&n.fee.to_be_bytes());
        }
        out.extend_from_slice(&self.total_fee.to_be_bytes());
        out.extend_from_slice(&self.receipts_hash);
        out
    }

    /// `SHA-256(0x31 ‖ encode())`: the report's reference, what nodes sign
    /// and what the chain records.
    pub fn hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update([TAG_REPORT]);
        h.update(self.encode());
        h.finalize().into()
    }
}

/// A node's signature on a report hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportSignature {
    #[serde(with = "crate::hex_serde::hash")]
    pub node_key: [u8; 32],
    #[serde(with = "super::receipt::signature_hex")]
    pub signature: [u8; 64],
}

impl ReportSignature {
    pub fn sign(key: &SigningKey, report_hash: &Hash) -> ReportSignature {
        ReportSignature {
            node_key: key.verifying_key().to_bytes(),
            signature: key.sign(report_hash).to_bytes(),
        }
    }
}

/// What the chain records of a settlement (the local ledger's entry kind 3;
/// on an EVM chain the same bytes as calldata): the report's hash and the
/// nodes' signatures on it. The report itself is kept by the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementEntry {
    #[serde(with = "crate::hex_serde::hash")]
    pub cluster_id: Hash,
    pub epoch: u64,
    #[serde(with = "crate::hex_serde::hash")]
    pub report_hash: Hash,
    pub signatures: Vec<ReportSignature>,
}

/// Most signatures an entry may carry.
pub const MAX_SIGNATURES: usize = 1024;

impl SettlementEntry {
    /// `REPORT_MAGIC ‖ version ‖ cluster_id ‖ epoch ‖ report_hash ‖
    /// u16be(n) ‖ (node_key ‖ signature) × n`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 1 + 32 + 8 + 32 + 2 + 96 * self.signatures.len());
        out.extend_from_slice(&REPORT_MAGIC);
        out.push(REPORT_VERSION);
        out.extend_from_slice(&self.cluster_id);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.report_hash);
        out.extend_from_slice(&(self.signatures.len() as u16).to_be_bytes());
        for s in &self.signatures {
            out.extend_from_slice(&s.node_key);
            out.extend_from_slice(&s.signature);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SettlementEntry, VerifyError> {
        let bad = |why: &str| refused(format!("settlement entry: {why}"));
        if bytes.len() < 79 || bytes[..4] != REPORT_MAGIC {
            return Err(bad("too short or no SDBS magic"));
        }
        if bytes[4] != REPORT_VERSION {
            return Err(bad("unknown version"));
        }
        let hash_at = |at: usize| -> Hash {
            let mut h = [0; 32];
            h.copy_from_slice(&bytes[at..at + 32]);
            h
        };
        let mut epoch = [0; 8];
        epoch.copy_from_slice(&bytes[37..45]);
        let n = u16::from_be_bytes([bytes[77], bytes[78]]) as usize;
        if n > MAX_SIGNATURES || bytes.len() != 79 + 96 * n {
            return Err(bad("its length does not match its signature count"));
        }
        let signatures = (0..n)
            .map(|i| {
                let at = 79 + 96 * i;
                let mut signature = [0; 64];
                signature.copy_from_slice(&bytes[at + 32..at + 96]);
                ReportSignature {
                    node_key: hash_at(at),
                    signature,
                }
            })
            .collect();
        Ok(SettlementEntry {
            cluster_id: hash_at(5),
            epoch: u64::from_be_bytes(epoch),
            report_hash: hash_at(45),
            signatures,
        })
    }

    /// Checks the signatures: each valid over the report hash, by a distinct
    /// key of `members` (the cluster's nodes), and at least two thirds of
    /// the members signed.
    pub fn verify(&self, members: &[[u8; 32]]) -> Result<(), VerifyError> {
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.signatures {
            let who = hex::encode(&s.node_key[..4]);
            if !members.contains(&s.node_key) {
                return Err(refused(format!(
                    "signed by {who}…, not a node of the cluster"
                )));
            }
            if !seen.insert(s.node_key) {
                return Err(refused(format!("{who}… signed twice")));
            }
            let key = VerifyingKey::from_bytes(&s.node_key)
                .map_err(|_| refused(format!("{who}… is not an ed25519 key")))?;
            key.verify_strict(&self.report_hash, &Signature::from_bytes(&s.signature))
                .map_err(|_| refused(format!("bad signature by {who}…")))?;
        }
        if seen.len() * 3 < members.len() * 2 {
            return Err(refused(format!(
                "signed by {} of the {} nodes, fewer than two thirds",
                seen.len(),
                members.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Prices, RECEIPT_VERSION};

    fn receipt(key: &SigningKey, sequence: u64, payer: u8, bytes: u64) -> Receipt {
        let prices = Prices {
            wei_per_kib: 1024,
            wei_per_document: 3,
        };
        let mut r = Receipt {
            version: RECEIPT_VERSION,
            cluster_id: [1; 32],
            node_key: [0; 32],
            sequence,
            epoch: 4,
            payer: Address([payer; 20]),
            request_hash: [sequence as u8; 32],
            bytes,
            documents: 2,
            prices,
            fee: prices.fee(bytes, 2).unwrap(),
            batch: Default::default(),
            signature: [0; 64],
        };
        r.sign(key);
        r
    }

    #[test]
    fn a_report_from_receipts_holds_and_tampering_is_caught() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let b = SigningKey::from_bytes(&[2; 32]);
        let ra: Vec<Receipt> = (10..13).map(|s| receipt(&a, s, 7, 100)).collect();
        let rb: Vec<Receipt> = (1..3).map(|s| receipt(&b, s, 9, 50)).collect();
        let nodes = [
            (a.verifying_key().to_bytes(), ra.clone()),
            (b.verifying_key().to_bytes(), rb.clone()),
        ];
        let report = VolumeReport::from_receipts([1; 32], 4, &nodes).unwrap();
        report.check().unwrap();
        // Each node's own report, merged: the same report.
        let parts: Vec<VolumeReport> = nodes
            .iter()
            .map(|n| VolumeReport::from_receipts([1; 32], 4, std::slice::from_ref(n)).unwrap())
            .collect();
        assert_eq!(VolumeReport::merge([1; 32], 4, &parts).unwrap(), report);
        assert!(VolumeReport::merge([1; 32], 4, &[parts[0].clone(), parts[0].clone()]).is_err());
        assert_eq!(report.total_fee, 3 * 106 + 2 * 56);
        assert_eq!(report.wallet_volumes.len(), 2);

        // An inflated receipt (fee past its prices), a repeated one, a
        // forged one, one of another epoch: each refused.
        let mut inflated = ra.clone();
        inflated[1].fee += 1;
        let mut repeated = ra.clone();
        repeated[2] = repeated[1].clone();
        let mut forged = ra.clone();
        forged[0].bytes = 1;
        forged[0].fee = forged[0].prices.fee(1, 2).unwrap();
        let mut late = ra.clone();
        late[2].epoch = 5;
        late[2].sign(&a);
        for bad in [inflated, repeated, forged, late] {
            let nodes = [(a.verifying_key().to_bytes(), bad)];
            assert!(VolumeReport::from_receipts([1; 32], 4, &nodes).is_err());
        }
        // A report whose totals were edited: refused by its own check.
        let mut edited = report.clone();
        edited.wallet_volumes[0].fee += 1;
        assert!(edited.check().is_err());

        // Signatures: two of three nodes are two thirds; one is not.
        let c = SigningKey::from_bytes(&[3; 32]);
        let members = [a, b, c].map(|k| k.verifying_key().to_bytes());
        let hash = report.hash();
        let mut entry = SettlementEntry {
            cluster_id: [1; 32],
            epoch: 4,
            report_hash: hash,
            signatures: vec![
                ReportSignature::sign(&SigningKey::from_bytes(&[1; 32]), &hash),
                ReportSignature::sign(&SigningKey::from_bytes(&[2; 32]), &hash),
            ],
        };
        entry.verify(&members).unwrap();
        assert_eq!(SettlementEntry::decode(&entry.encode()).unwrap(), entry);
        let mut twice = entry.clone();
        twice.signatures[1] = twice.signatures[0].clone();
        assert!(twice.verify(&members).is_err());
        entry.signatures.pop();
        let short = entry.verify(&members).unwrap_err().to_string();
        assert!(short.contains("fewer than two thirds"), "{short}");
        let stranger = ReportSignature::sign(&SigningKey::from_bytes(&[9; 32]), &hash);
        entry.signatures.push(stranger);
        assert!(entry.verify(&members).is_err());
    }
}
