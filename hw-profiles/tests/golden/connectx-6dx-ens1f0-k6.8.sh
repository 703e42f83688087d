# wirewatch hw-profile connectx-6dx for ens1f0np0 (kernel 6.8, 4 worker core(s): [2, 3, 4, 5])
# promiscuous: a span port's frames are addressed to other hosts
ip link set dev ens1f0np0 promisc on
# 4 combined channels, one per worker core: an unbound queue's packets are never analysed
ethtool -L ens1f0np0 combined 4
# 8192 RX descriptors per queue: absorb bursts while a worker is busy
ethtool -G ens1f0np0 rx 8192
# lro off: the sensor must see frames as they were on the wire
ethtool -K ens1f0np0 lro off
# gro off: the sensor must see frames as they were on the wire
ethtool -K ens1f0np0 gro off
# rx-gro-hw off: the sensor must see frames as they were on the wire
ethtool -K ens1f0np0 rx-gro-hw off
# rxvlan off: the sensor must see frames as they were on the wire
ethtool -K ens1f0np0 rxvlan off
# driver private flag rx_cqe_compress on
ethtool --set-priv-flags ens1f0np0 rx_cqe_compress on
# driver private flag rx_striding_rq on
ethtool --set-priv-flags ens1f0np0 rx_striding_rq on
# symmetric RSS: both directions of a flow on one queue, so one worker owns it
ethtool -X ens1f0np0 hfunc toeplitz symmetric-xor || true  # the driver's Toeplitz hash is symmetric already
# tcp4 hashed on addresses and ports: flows spread over all queues
ethtool -N ens1f0np0 rx-flow-hash tcp4 sdfn
# tcp6 hashed on addresses and ports: flows spread over all queues
ethtool -N ens1f0np0 rx-flow-hash tcp6 sdfn
# napi_defer_hard_irqs 2: keep interrupts off while the worker busy-polls
echo 2 > /sys/class/net/ens1f0np0/napi_defer_hard_irqs
# gro_flush_timeout 200000 ns: the safety timer that re-arms interrupts if polling stops
echo 200000 > /sys/class/net/ens1f0np0/gro_flush_timeout
# queue 0's interrupt on worker core 2
echo 2 > /proc/irq/$(awk '$NF=="mlx5_comp0@pci:0000:3b:00.0" {sub(":","",$1); print $1}' /proc/interrupts)/smp_affinity_list
# queue 1's interrupt on worker core 3
echo 3 > /proc/irq/$(awk '$NF=="mlx5_comp1@pci:0000:3b:00.0" {sub(":","",$1); print $1}' /proc/interrupts)/smp_affinity_list
# queue 2's interrupt on worker core 4
echo 4 > /proc/irq/$(awk '$NF=="mlx5_comp2@pci:0000:3b:00.0" {sub(":","",$1); print $1}' /proc/interrupts)/smp_affinity_list
# queue 3's interrupt on worker core 5
echo 5 > /proc/irq/$(awk '$NF=="mlx5_comp3@pci:0000:3b:00.0" {sub(":","",$1); print $1}' /proc/interrupts)/smp_affinity_list
