//! fleetstream consumer (in progress).
