//! fleetstream dispatcher (in progress).
