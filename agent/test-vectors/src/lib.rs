//! Where the real evidence vectors are: `$PODMESH_VECTORS`, else `shared/vectors` beside
//! the repository (the layout CI checks out). For the tests of every crate that verifies
//! real evidence; a missing directory fails them rather than skipping a check.
//! A crate of its own, used only as a dev-dependency, so no production library carries it.

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too
use std::path::PathBuf;

/// The vectors directory; panics with what to do when it is absent.
pub fn dir() -> PathBuf {
    let dir = std::env::var_os("PODMESH_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"));
    assert!(
        dir.is_dir(),
        "evidence vectors not found at {}: check out shared/ beside the repository or set PODMESH_VECTORS",
        dir.display()
    );
    dir
}
