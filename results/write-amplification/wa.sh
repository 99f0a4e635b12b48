# usage: wa.sh BIN NAME RATE -> write amplification + latency
bin=$1 name=$2 rate=$3
(sleep 12; p=$(pgrep -f "$bin serve"); a=$(grep ^write_bytes /proc/$p/io | awk '{print $2}'); d1=$(awk '{print $7}' /sys/block/vda/stat); sleep 10; b=$(grep ^write_bytes /proc/$p/io | awk '{print $2}'); d2=$(awk '{print $7}' /sys/block/vda/stat); echo "$name broker write MB/s $(( (b-a)/10000000 )) device write MB/s $(( (d2-d1)*512/10000000 ))" >> /tmp/cab/wa-ab.txt) &
STROM_BIN=$bin AB_OUT=/tmp/cab results/compaction/ab.sh $name off $rate 2>&1 | grep -E 'end-to-end' | sed "s/^/$name /" >> /tmp/cab/wa-ab.txt
wait
