// The CPU a whole PostgreSQL cluster spends, from /proc: the postmaster's own utime+stime, the
// cutime+cstime of its reaped children (every backend that exited, with its own reaped children),
// and the utime+stime of its live children (backends, pooled or not, and the background processes).
// Two samples around a run give the cluster's CPU over it, churned backends included: a backend
// that exits between the samples moves from the live sum to the postmaster's cutime+cstime when
// the postmaster reaps it, which it does at once. A backend reaped between the reading of the
// postmaster and the reading of its children is missed by that sample (at most one backend's
// CPU per sample). Linux only.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** The postmaster's pid, from the first line of <data>/postmaster.pid. */
export function postmasterPid(dataDir) {
  const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid < 1) throw new Error(`no postmaster pid in ${dataDir}`);
  return pid;
}

/** /proc/<pid>/stat's ppid, utime, stime, cutime and cstime (clock ticks). */
function stat(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)", from field 3 (state): ppid is field 4, utime 14, stime 15,
  // cutime 16, cstime 17.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return {
    ppid: Number(f[1]),
    utime: Number(f[11]),
    stime: Number(f[12]),
    cutime: Number(f[13]),
    cstime: Number(f[14]),
  };
}

/** The cluster's CPU so far, clock ticks, and how many live children were summed. */
export function clusterCpuTicks(pmPid) {
  const pm = stat(pmPid);
  let ticks = pm.utime + pm.stime + pm.cutime + pm.cstime;
  let live = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let s;
    try {
      s = stat(name);
    } catch {
      continue; // gone meanwhile
    }
    if (s.ppid !== pmPid) continue;
    ticks += s.utime + s.stime;
    live += 1;
  }
  return { ticks, live };
}
