from fastapi_migrate.testing import (
    assert_downgrade_leaves_no_trace,
    assert_models_match_migrations,
    assert_single_head,
    assert_upgrade_downgrade_roundtrip,
)


def test_migrations():
    assert_single_head()  # two heads: names them, suggests a merge revision
    assert_upgrade_downgrade_roundtrip()  # every revision up, down, up again
    assert_downgrade_leaves_no_trace()  # the schema after up then down is the schema before
    assert_models_match_migrations()  # the migrated schema equals the models (MIGRATE_METADATA)
