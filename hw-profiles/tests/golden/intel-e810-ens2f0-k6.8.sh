# wirewatch hw-profile intel-e810 for ens2f0 (kernel 6.8, 4 worker core(s): [2, 3, 4, 5])
# promiscuous: a span port's frames are addressed to other hosts
ip link set dev ens2f0 promisc on
# 4 combined channels, one per worker core: an unbound queue's packets are never analysed
ethtool -L ens2f0 combined 4
# 8160 RX descriptors per queue: absorb bursts while a worker is busy
ethtool -G ens2f0 rx 8160
# gro off: the sensor must see frames as they were on the wire
ethtool -K ens2f0 gro off
# rxvlan off: the sensor must see frames as they were on the wire
ethtool -K ens2f0 rxvlan off
# rx-vlan-stag-hw-parse off: the sensor must see frames as they were on the wire
ethtool -K ens2f0 rx-vlan-stag-hw-parse off
# symmetric RSS: both directions of a flow on one queue, so one worker owns it
ethtool -X ens2f0 hfunc toeplitz symmetric-xor || ethtool -X ens2f0 hfunc toeplitz hkey 6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a
# tcp4 hashed on addresses and ports: flows spread over all queues
ethtool -N ens2f0 rx-flow-hash tcp4 sdfn
# tcp6 hashed on addresses and ports: flows spread over all queues
ethtool -N ens2f0 rx-flow-hash tcp6 sdfn
# napi_defer_hard_irqs 2: keep interrupts off while the worker busy-polls
echo 2 > /sys/class/net/ens2f0/napi_defer_hard_irqs
# gro_flush_timeout 200000 ns: the safety timer that re-arms interrupts if polling stops
echo 200000 > /sys/class/net/ens2f0/gro_flush_timeout
# queue 0's interrupt on worker core 2
echo 2 > /proc/irq/$(awk '$NF=="ice-ens2f0-TxRx-0" {sub(":","",$1); print $1}' /proc/interrupts)/smp_affinity_list
# queue 1's interrupt on worker core 3
echo 3 > /proc/irq/$(awk '$NF=="ice-ens2f0-TxRx-1" {sub(":","",$1); print $1}' /proc/interrupts)/smp_affinity_list
# queue 2's interrupt on worker core 4
echo 4 > /proc/irq/$(awk '$NF=="ice-ens2f0-TxRx-2" {sub(":","",$1); print $1}' /proc/interrupts)/smp_affinity_list
# queue 3's interrupt on worker core 5
echo 5 > /proc/irq/$(awk '$NF=="ice-ens2f0-TxRx-3" {sub(":","",$1); print $1}' /proc/interrupts)/smp_affinity_list
