"""Memory of a server's whole process tree, in one pass over /proc.

Usage: treemem.py ROOTPID [COMM]
       treemem.py --pids ROOTPID     the tree's pids, one a line
       treemem.py --maps ROOTPID COMM
           one COMM process below ROOTPID (a connection's), its Pss by
           mapping: map_exe (the binary's file pages), map_bss (the
           unnamed mapping that follows them), map_heap, map_stack,
           map_libc, map_ld (the dynamic loader), map_anon (other unnamed
           mappings), map_other; and its VmPTE as map_pte

Prints one line of key=value figures, every size in KiB:
  procs     processes in the tree (ROOTPID and everything below it)
  handlers  of them, those whose comm is COMM (the per-connection processes)
  pss rss   sums of Pss and Rss from /proc/PID/smaps_rollup
  pss_anon pss_file   Pss_Anon and Pss_File summed (the split of pss)
  pte       VmPTE summed from /proc/PID/status (page tables, kernel memory
            that no Pss counts)
  handler_peak  largest VmHWM of one COMM process
and, system-wide from /proc/meminfo and /proc/net/sockstat (every process's,
the client's too): kstack, pagetables, sunreclaim (unreclaimable slab),
vmalloc (VmallocUsed), of it from /proc/vmallocinfo (root only) the
pages of kernel stacks (vm_stack: kernel_clone's, with CONFIG_VMAP_STACK)
and of BPF programs (vm_bpf: seccomp filters), tcp_mem (TCP socket
buffers, pages * 4 KiB), tcp_inuse, tcp_alloc.
A process that ends during the pass is skipped.
"""
import os
import sys


def tree(root):
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def fields(path, keys):
    got = {}
    with open(path) as f:
        for line in f:
            k, _, rest = line.partition(":")
            if k in keys:
                got[k] = int(rest.split()[0])
    return got


def maps(root, comm):
    """Pss of one COMM process below root, by kind of mapping."""
    for p in tree(root)[1:]:
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() != comm:
                    continue
            exe = os.readlink(f"/proc/{p}/exe")
            kinds = dict(exe=0, bss=0, heap=0, stack=0, libc=0, ld=0, anon=0, other=0)
            last = ""
            kind = "other"
            with open(f"/proc/{p}/smaps") as f:
                for line in f:
                    w = line.split()
                    if "-" in w[0] and len(w) >= 5 and not w[0].endswith(":"):
                        name = w[5] if len(w) > 5 else ""
                        if name == exe:
                            kind = "exe"
                        elif name == "" and last == exe:
                            kind = "bss"
                        elif name == "[heap]":
                            kind = "heap"
                        elif name == "[stack]":
                            kind = "stack"
                        elif "/libc.so" in name or "/libc-" in name:
                            kind = "libc"
                        elif "/ld-linux" in name or "/ld-" in name:
                            kind = "ld"
                        elif name == "":
                            kind = "anon"
                        else:
                            kind = "other"
                        last = name
                    elif w[0] == "Pss:":
                        kinds[kind] += int(w[1])
            pte = fields(f"/proc/{p}/status", ("VmPTE",)).get("VmPTE", 0)
        except (OSError, ValueError, IndexError):
            continue
        print(" ".join(f"map_{k}={v}" for k, v in kinds.items()) + f" map_pte={pte}")
        return


def main():
    if sys.argv[1] == "--maps":
        maps(int(sys.argv[2]), sys.argv[3])
        return
    if sys.argv[1] == "--pids":
        for p in tree(int(sys.argv[2])):
            if os.path.exists(f"/proc/{p}"):
                print(p)
        return
    root = int(sys.argv[1])
    handler = sys.argv[2] if len(sys.argv) > 2 else ""
    tot = dict(procs=0, handlers=0, pss=0, rss=0, pss_anon=0, pss_file=0, pte=0,
               handler_peak=0)
    for p in tree(root):
        try:
            sm = fields(f"/proc/{p}/smaps_rollup", ("Pss", "Rss", "Pss_Anon", "Pss_File"))
            stt = fields(f"/proc/{p}/status", ("VmPTE", "VmHWM"))
            with open(f"/proc/{p}/comm") as f:
                comm = f.read().strip()
        except (OSError, ValueError, IndexError):
            continue
        if "Pss" not in sm:		# a kernel thread or a zombie
            continue
        tot["procs"] += 1
        tot["pss"] += sm.get("Pss", 0)
        tot["rss"] += sm.get("Rss", 0)
        tot["pss_anon"] += sm.get("Pss_Anon", 0)
        tot["pss_file"] += sm.get("Pss_File", 0)
        tot["pte"] += stt.get("VmPTE", 0)
        if handler and comm == handler:
            tot["handlers"] += 1
            tot["handler_peak"] = max(tot["handler_peak"], stt.get("VmHWM", 0))
    mi = fields("/proc/meminfo", ("KernelStack", "PageTables", "SUnreclaim", "VmallocUsed"))
    tot["vmalloc"] = mi.get("VmallocUsed", 0)
    tot["kstack"] = mi.get("KernelStack", 0)
    tot["pagetables"] = mi.get("PageTables", 0)
    tot["sunreclaim"] = mi.get("SUnreclaim", 0)
    try:
        vs = vb = 0
        with open("/proc/vmallocinfo") as f:
            for line in f:
                w = line.split()
                pages = [int(x[6:]) for x in w if x.startswith("pages=")]
                if len(w) < 3 or not pages:
                    continue
                if w[2].startswith("kernel_clone"):
                    vs += pages[0]
                elif w[2].startswith("bpf_prog_alloc"):
                    vb += pages[0]
        kib = os.sysconf("SC_PAGE_SIZE") // 1024
        tot["vm_stack"], tot["vm_bpf"] = vs * kib, vb * kib
    except OSError:
        pass
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                w = line.split()[1:]
                kv = dict(zip(w[0::2], w[1::2]))
                tot["tcp_mem"] = int(kv.get("mem", 0)) * (os.sysconf("SC_PAGE_SIZE") // 1024)
                tot["tcp_inuse"] = int(kv.get("inuse", 0))
                tot["tcp_alloc"] = int(kv.get("alloc", 0))
    print(" ".join(f"{k}={v}" for k, v in tot.items()))


if __name__ == "__main__":
    main()
