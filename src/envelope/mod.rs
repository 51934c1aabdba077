//! The privilege envelope (issue 4): plan in the parent, apply in the child, supervise, report.
