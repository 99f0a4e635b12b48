"""Sums a `perf script` of the broker by copy routine (user memcpy, the
kernel's socket copies, crc32c) and the Strom function that called it, as
shares of all samples. Usage: copies.py SCRIPT.txt"""
import re, collections, sys
samples=open(sys.argv[1]).read().split('\n\n')
tot=0; mm=collections.Counter()
for s in samples:
    lines=[l.strip() for l in s.strip().split('\n') if l.strip()]
    if len(lines)<2: continue
    tot+=1
    frames=lines[1:]
    top=frames[0]
    if any(k in top for k in ('memmove','memcpy','copy_to_iter','copy_from_iter','crc32c')):
        kind = 'memcpy' if ('memmove' in top or 'memcpy' in top) else ('crc32c' if 'crc32c' in top else top.split()[1].split('+')[0])
        who='?'
        for f in frames[1:]:
            if 'strom_' in f:
                who=re.sub(r'\+0x[0-9a-f]+.*','',f.split(' ',1)[1])[:100]; break
        mm[(kind,who)]+=1
print('samples',tot)
for (k,w),c in mm.most_common(14): print(f"{100*c/tot:5.1f}% {k:16s} {w}")
