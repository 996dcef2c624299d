//! fleetstream producer (in progress).
