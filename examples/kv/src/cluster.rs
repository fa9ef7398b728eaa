//! The cluster view (to come).
