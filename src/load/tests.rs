use std::path::PathBuf;

use super::*;
use crate::base::Origin;
use crate::base::options::Mode;
use crate::schema::TableName;
use crate::source::RetryPolicy;
use crate::source::throttle::RateLimit;

fn spec() -> LoadSpec {
    LoadSpec {
        source: "http://127.0.0.1/x".into(),
        table: Some(TableName::parse("t").unwrap()),
        copy_streams: 1,
        lock_timeout_secs: None,
        distribute_by: None,
        colocate_with: None,
        shard_count: None,
        reference_table: false,
        state_key: "t".into(),
        ..LoadSpec::default()
    }
}

#[test]
fn defaults_apply_whichever_way_the_load_was_described() {
    for origin in [Origin::Flags, Origin::Yaml] {
        let load = spec().resolve(origin, &|_| None).unwrap();
        assert_eq!(
            (
                load.decode.sample,
                load.decode.batch_size,
                load.write.insert_batch,
                load.decode.max_record_bytes
            ),
            (1000, 8192, 5000, 64 << 20)
        );
    }
    let load = LoadSpec {
        on_error: crate::base::options::OnError::Reject,
        ..spec()
    }
    .resolve(Origin::Yaml, &|_| None)
    .unwrap();
    assert!(load.decode.rejecting);
    assert_eq!(load.rejects.unwrap().path, PathBuf::from("rejects.ndjson"));
}

#[test]
fn messages_name_settings_as_the_user_wrote_them() {
    let unset = LoadSpec {
        headers: vec![("X-Key".into(), "${NOPE}".into())],
        ..spec()
    };
    assert_eq!(
        unset
            .clone()
            .resolve(Origin::Flags, &|_| None)
            .unwrap_err()
            .to_string(),
        "environment variable NOPE (in --header X-Key) is not set"
    );
    assert_eq!(
        unset
            .resolve(Origin::Yaml, &|_| None)
            .unwrap_err()
            .to_string(),
        "environment variable NOPE (in headers X-Key) is not set"
    );
    let retry = LoadSpec {
        retry: Some(RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        }),
        ..spec()
    };
    assert_eq!(
        retry
            .resolve(Origin::Yaml, &|_| None)
            .unwrap_err()
            .to_string(),
        "retry: need max_attempts >= 1 and 0 <= min_delay_secs <= max_delay_secs <= 3600"
    );
    let rate = LoadSpec {
        rate_limit: Some(RateLimit {
            requests_per_second: 0.0,
            burst: 1.0,
        }),
        ..spec()
    };
    assert_eq!(
        rate.resolve(Origin::Flags, &|_| None)
            .unwrap_err()
            .to_string(),
        "--rate-limit: need requests_per_second > 0 and burst >= 1"
    );
}

#[test]
fn settings_that_do_not_go_together_are_refused() {
    let err = |spec: LoadSpec| {
        spec.resolve(Origin::Flags, &|_| None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(LoadSpec {
            mode: Mode::Merge,
            ..spec()
        }),
        "--mode merge needs --key COLUMN[,COLUMN…]"
    );
    assert_eq!(
        err(LoadSpec {
            mode: Mode::Replace,
            commit_every: Some(3),
            ..spec()
        }),
        "--commit-every cannot be used with --mode replace: a replace must land in one transaction"
    );
    assert_eq!(
        err(LoadSpec {
            body: Some("{}".into()),
            ..spec()
        }),
        "--body needs --http-method post"
    );
    assert_eq!(
        err(LoadSpec {
            read_timeout_secs: Some(-1.0),
            ..spec()
        }),
        "--read-timeout: must be a positive number of seconds"
    );
}

#[test]
fn citus_settings_are_checked_and_named_as_written() {
    let yaml_err = |spec: LoadSpec| {
        spec.resolve(Origin::Yaml, &|_| None)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        yaml_err(LoadSpec {
            distribute_by: Some("id".into()),
            colocate_with: Some("a".into()),
            shard_count: Some(4),
            ..spec()
        }),
        "shard_count cannot go with colocate_with: a table colocated with another has its shard count"
    );
    assert_eq!(
        yaml_err(LoadSpec {
            distribute_by: Some("id".into()),
            reference_table: true,
            ..spec()
        }),
        "distribute_by and reference_table cannot go together: a reference table has no distribution column"
    );
    let load = LoadSpec {
        distribute_by: Some("id".into()),
        shard_count: Some(4),
        ..spec()
    }
    .resolve(Origin::Flags, &|_| None)
    .unwrap();
    let table = TableName::parse("s.t").unwrap();
    assert_eq!(
        load.write.distribute.unwrap().statement(&table),
        r#"SELECT create_distributed_table('"s"."t"', 'id', shard_count => 4)"#
    );
}
