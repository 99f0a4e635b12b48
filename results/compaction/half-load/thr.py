import os,sys,time,collections
def snap(pid):
    d=collections.Counter()
    for t in os.listdir(f'/proc/{pid}/task'):
        try:
            s=open(f'/proc/{pid}/task/{t}/stat').read()
        except OSError: continue
        name=s[s.index('(')+1:s.rindex(')')]
        f=s[s.rindex(')')+2:].split()
        d[name]+=int(f[11])+int(f[12])
    return d
pids=[int(p) for p in sys.argv[1:]]
a=[snap(p) for p in pids]; t0=time.time(); time.sleep(float(os.environ.get("SECS","10"))); b=[snap(p) for p in pids]; dt=time.time()-t0
for p,x,y in zip(pids,a,b):
    for k in sorted(y):
        v=(y[k]-x.get(k,0))/os.sysconf('SC_CLK_TCK')/dt*100
        if v>1: print(p,k,f'{v:.0f}%')
