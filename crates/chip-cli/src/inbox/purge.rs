//! `chip inbox purge`: remove finished deliveries past an age, never under 48 hours unless forced.

use std::time::Duration;

use chip_gate_inbox::{Inbox, MIN_RETENTION};

use crate::common::{Failure, Outcome};
use crate::outln;

use super::open::failed;
use super::time::human;
use super::url::DatabaseUrl;

/// Refuses an age under 48 hours without `--force` (a usage problem, found before the database is
/// opened).
pub(super) fn check(older_than: Duration, force: bool) -> Result<(), Failure> {
    if older_than < MIN_RETENTION && !force {
        return Err(Failure::usage(format!(
            "--older-than {} is under 48 hours: a delivery removed before CHIP's last retry (up \
             to 36 hours) would be stored and handled again if CHIP sends it once more; pass \
             --force to purge anyway",
            human(older_than)
        )));
    }
    Ok(())
}

/// Removes done and stale deliveries finished more than `older_than` ago.
pub(super) async fn purge(inbox: &Inbox, url: &DatabaseUrl, older_than: Duration) -> Outcome {
    let removed = inbox
        .purge_finished_before(older_than)
        .await
        .map_err(failed(url))?;
    outln!(
        "Removed {removed} done or stale deliveries finished more than {} ago.",
        human(older_than)
    )?;
    Ok(0)
}
