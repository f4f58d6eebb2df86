//! Alarms as replicated state (etcd's alarm store): which member raised which alarm. Raised
//! and cleared only through raft, so every member refuses the same writes while NOSPACE is
//! active (etcd's "capped" applier).

use heed::{RoTxn, RwTxn};
use prost::Message;

use crate::backend::{meta_key, Backend};
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};
use crate::pb::rsetcdpb::AlarmSet;

/// Every active alarm, ordered by member then type.
pub fn load(backend: &Backend, txn: &RoTxn) -> heed::Result<Vec<AlarmMember>> {
    let Some(bytes) = backend.meta().get(txn, meta_key::ALARMS)? else {
        return Ok(Vec::new());
    };
    Ok(AlarmSet::decode(bytes).expect("corrupt stored alarms").alarms)
}

pub fn no_space(backend: &Backend, txn: &RoTxn) -> heed::Result<bool> {
    Ok(load(backend, txn)?.iter().any(|a| a.alarm == AlarmType::Nospace as i32))
}

/// Applies an ACTIVATE or DEACTIVATE and returns the alarms it changed, as etcd answers.
pub fn apply(
    backend: &Backend,
    txn: &mut RwTxn,
    req: &AlarmRequest,
) -> heed::Result<Vec<AlarmMember>> {
    let mut alarms = load(backend, txn)?;
    let target = AlarmMember { member_id: req.member_id, alarm: req.alarm };
    let position = alarms.iter().position(|a| *a == target);
    let changed = match (AlarmAction::try_from(req.action), position) {
        (Ok(AlarmAction::Activate), None) if req.alarm != AlarmType::None as i32 => {
            alarms.push(target);
            alarms.sort_by_key(|a| (a.member_id, a.alarm));
            vec![target]
        }
        (Ok(AlarmAction::Activate), Some(_)) => vec![target],
        (Ok(AlarmAction::Deactivate), Some(i)) => vec![alarms.remove(i)],
        _ => return Ok(Vec::new()),
    };
    let set = AlarmSet { alarms };
    backend.meta().put(txn, meta_key::ALARMS, &set.encode_to_vec())?;
    Ok(changed)
}

/// etcd's name of an alarm type (`NOSPACE`, `CORRUPT`).
pub fn name(alarm: i32) -> &'static str {
    match AlarmType::try_from(alarm) {
        Ok(AlarmType::Nospace) => "NOSPACE",
        Ok(AlarmType::Corrupt) => "CORRUPT",
        _ => "NONE",
    }
}
