//! The one table from core errors to gRPC statuses, with etcd's exact codes and messages
//! (etcd's `api/v3rpc/rpctypes/error.go`, 3.6 codes). Clients match on the message text.

use tonic::{Code, Status};

use crate::server::Error;
use crate::{auth, mvcc};

pub fn to_status(err: Error) -> Status {
    let (code, message): (Code, &str) = match &err {
        Error::Mvcc(mvcc::Error::Compacted) => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        }
        Error::Mvcc(mvcc::Error::FutureRev) => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision")
        }
        Error::Mvcc(mvcc::Error::KeyNotFound) | Error::KeyNotFound => {
            (Code::InvalidArgument, "etcdserver: key not found")
        }
        Error::Mvcc(mvcc::Error::LeaseNotFound) => {
            (Code::NotFound, "etcdserver: requested lease not found")
        }
        Error::Mvcc(mvcc::Error::Storage(e)) => {
            return Status::unknown(format!("rsetcd: storage error: {e}"))
        }
        Error::Mvcc(mvcc::Error::LeaseExists) => {
            (Code::FailedPrecondition, "etcdserver: lease already exists")
        }
        Error::Mvcc(mvcc::Error::NoSpace) => {
            (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded")
        }
        Error::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL"),
        Error::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        Error::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        Error::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        Error::TooManyOps => {
            (Code::InvalidArgument, "etcdserver: too many operations in txn request")
        }
        Error::DuplicateKey => {
            (Code::InvalidArgument, "etcdserver: duplicate key given in txn request")
        }
        Error::InvalidSortOption => (Code::InvalidArgument, "etcdserver: invalid sort option"),
        Error::RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
        Error::Timeout => (Code::Unavailable, "etcdserver: request timed out"),
        Error::NoLeader => (Code::Unavailable, "etcdserver: no leader"),
        Error::NotLeader => (Code::FailedPrecondition, "etcdserver: not leader"),
        Error::LeaderChanged => (Code::Unavailable, "etcdserver: leader changed"),
        Error::MemberBadUrls => {
            (Code::InvalidArgument, "etcdserver: given member URLs are invalid")
        }
        Error::PeerUrlExists => (Code::FailedPrecondition, "etcdserver: Peer URLs already exists"),
        Error::MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
        Error::MemberNotLearner => {
            (Code::FailedPrecondition, "etcdserver: can only promote a learner member")
        }
        Error::LearnerNotReady => (
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        Error::TooManyLearners => {
            (Code::FailedPrecondition, "etcdserver: too many learner members in cluster")
        }
        Error::NotEnoughStartedMembers => (
            Code::FailedPrecondition,
            "etcdserver: re-configuration failed due to not enough started members",
        ),
        Error::Unhealthy => (Code::Unavailable, "etcdserver: unhealthy cluster"),
        Error::NotSupportedForLearner => {
            (Code::FailedPrecondition, "etcdserver: rpc not supported for learner")
        }
        Error::BadLeaderTransferee => {
            (Code::FailedPrecondition, "etcdserver: bad leader transferee")
        }
        Error::LeaderTransferTimeout => {
            (Code::Unavailable, "etcdserver: request timed out, leader transfer took too long")
        }
        Error::Stopped => (Code::Unavailable, "etcdserver: server stopped"),
        Error::Auth(err) => return auth_status(err),
    };
    Status::new(code, message)
}

/// etcd's codes for auth errors; the message is the error's text after `etcdserver: `.
pub fn auth_status(err: &auth::Error) -> Status {
    use auth::Error as A;
    let code = match err {
        A::TokenSigning(text) => return Status::unknown(text.clone()),
        A::NoPasswordUser => return Status::unknown(err.to_string()),
        A::UserEmpty
        | A::RoleEmpty
        | A::AuthFailed
        | A::PermissionNotGiven
        | A::InvalidAuthMgmt
        | A::AuthOldRevision => Code::InvalidArgument,
        A::PermissionDenied => Code::PermissionDenied,
        A::InvalidAuthToken => Code::Unauthenticated,
        A::RootUserNotExist
        | A::RootRoleNotExist
        | A::UserAlreadyExist
        | A::UserNotFound
        | A::RoleAlreadyExist
        | A::RoleNotFound
        | A::RoleNotGranted
        | A::PermissionNotGranted
        | A::AuthNotEnabled => Code::FailedPrecondition,
    };
    Status::new(code, format!("etcdserver: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_is_out_of_range_with_etcds_text() {
        let status = to_status(Error::Mvcc(mvcc::Error::Compacted));
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(status.message(), "etcdserver: mvcc: required revision has been compacted");
    }
}
