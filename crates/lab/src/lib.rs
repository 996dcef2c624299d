//! fleetstream lab (in progress).
