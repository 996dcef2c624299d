//! fleetstream obs (in progress).
