//! fleetstream testkit (in progress).
