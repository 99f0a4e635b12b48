import os,time
def s(): return list(map(int,open('/sys/block/vda/stat').read().split()))
a=s(); time.sleep(float(os.environ.get("SECS","10"))); b=s()
d=[y-x for x,y in zip(a,b)]
names=['rd_ios','rd_merges','rd_sect','rd_ticks','wr_ios','wr_merges','wr_sect','wr_ticks','inflight','io_ticks','tiq','dc_ios','dc_merges','dc_sect','dc_ticks','fl_ios','fl_ticks']
r=dict(zip(names,d))
print({k:r[k] for k in r})
print('read MB/s %.0f avg %.2f ms/io; write MB/s %.0f avg %.2f ms/io, %.0f KB/io; flush %d avg %.1f ms; discard %d avg %.1f ms' % (
 r['rd_sect']*512/float(os.environ.get("SECS","10"))/1e6, r['rd_ticks']/max(1,r['rd_ios']), r['wr_sect']*512/float(os.environ.get("SECS","10"))/1e6, r['wr_ticks']/max(1,r['wr_ios']), r['wr_sect']*512/max(1,r['wr_ios'])/1e3, r['fl_ios'], r['fl_ticks']/max(1,r['fl_ios']), r['dc_ios'], r['dc_ticks']/max(1,r['dc_ios'])))
