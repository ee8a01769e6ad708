// Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules: a lease is
// expired when its record has not changed for leaseDuration by the local clock (so clock skew
// between nodes does not matter); the leader renews every retryPeriod and gives up when it
// could not renew within renewDeadline, which is shorter than leaseDuration, so it has stopped
// before anyone else can take over. On shutdown it releases the lease for a fast handover.
import type { KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { errorMessage } from "../errors.ts";
import { isConflict, isNotFound, type KubeClient, RESOURCES } from "./client.ts";
import { microTime } from "./time.ts";

export interface LeaderElectionOptions {
  leaseName: string;
  leaseNamespace: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  log: Logger;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  onStatus?: (leading: boolean) => void;
}

/** A Lease as it travels on the wire (client-node's Lease types times as Date objects). */
interface Lease extends KubernetesObject {
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

export class LeaderElector {
  private readonly client: KubeClient;
  private readonly options: Required<Omit<LeaderElectionOptions, "onStatus">> &
    Pick<LeaderElectionOptions, "onStatus">;
  private observedRecord = "";
  private observedAt = 0;
  private lease: Lease | undefined;
  private leading = false;
  private lastRenewAt = 0;

  constructor(client: KubeClient, options: LeaderElectionOptions) {
    this.client = client;
    this.options = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      ...options,
    };
    if (this.options.renewDeadlineMs >= this.options.leaseDurationMs) {
      throw new Error("renewDeadline must be shorter than leaseDuration");
    }
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * Whether writes are safe now: leading, and the lease was renewed within renewDeadline. This
   * turns false before a standby could take the lease over, even if the renew loop is late.
   */
  canWrite(): boolean {
    return this.leading && Date.now() - this.lastRenewAt < this.options.renewDeadlineMs;
  }

  /** Campaigns until elected, leads until the signal aborts or renewal fails, then returns. */
  async run(signal: AbortSignal): Promise<void> {
    const { retryPeriodMs, renewDeadlineMs, log } = this.options;
    // The fence counts from when a renewal was sent, not answered: the API server may have
    // written it any time in between, and a standby counts from no later than that.
    let attemptAt = Date.now();
    while (!signal.aborted && !this.leading) {
      attemptAt = Date.now();
      if (await this.tryAcquireOrRenew()) break;
      await sleep(retryPeriodMs * (1 + Math.random() * 0.2), signal);
    }
    if (signal.aborted) return;
    this.lastRenewAt = attemptAt;
    this.setLeading(true);
    log.info({ lease: this.options.leaseName, identity: this.options.identity }, "became leader");
    let lastRenew = attemptAt;
    while (!signal.aborted) {
      await sleep(retryPeriodMs, signal);
      if (signal.aborted) break;
      const sentAt = Date.now();
      if (await this.tryAcquireOrRenew()) {
        lastRenew = sentAt;
        this.lastRenewAt = sentAt;
        continue;
      }
      if (Date.now() - lastRenew >= renewDeadlineMs) {
        log.error(
          { lease: this.options.leaseName },
          "failed to renew the lease within the renew deadline; stepping down",
        );
        this.setLeading(false);
        return;
      }
    }
    if (this.leading) {
      this.setLeading(false);
      await this.release();
    }
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.options.onStatus?.(leading);
    if (leading) this.options.onStartedLeading();
    else this.options.onStoppedLeading();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { leaseName, leaseNamespace, identity, leaseDurationMs, log } = this.options;
    const now = Date.now();
    try {
      const current = await this.client.get<Lease>(RESOURCES.lease, leaseNamespace, leaseName);
      const spec = {
        holderIdentity: identity,
        leaseDurationSeconds: Math.ceil(leaseDurationMs / 1000),
        renewTime: microTime(now),
      };
      if (!current) {
        this.lease = await this.client.create<Lease>(RESOURCES.lease, {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: leaseName, namespace: leaseNamespace },
          spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
        });
        this.observe(this.lease, now);
        return true;
      }
      const record = JSON.stringify(current.spec ?? {});
      if (record !== this.observedRecord) this.observe(current, now);
      const holder = current.spec?.holderIdentity ?? "";
      const durationMs = (current.spec?.leaseDurationSeconds ?? 0) * 1000;
      const heldByOther = holder !== "" && holder !== identity;
      if (heldByOther && this.observedAt + durationMs > now) return false;
      const takingOver = holder !== identity;
      this.lease = await this.client.replace<Lease>(RESOURCES.lease, {
        ...current,
        spec: {
          ...current.spec,
          ...spec,
          ...(takingOver
            ? {
                acquireTime: microTime(now),
                leaseTransitions: (current.spec?.leaseTransitions ?? 0) + 1,
              }
            : {}),
        },
      });
      this.observe(this.lease, now);
      return true;
    } catch (error) {
      if (!isConflict(error) && !isNotFound(error)) {
        log.warn({ err: errorMessage(error) }, "lease acquire/renew failed");
      }
      return false;
    }
  }

  private observe(lease: Lease, now: number): void {
    this.observedRecord = JSON.stringify(lease.spec ?? {});
    this.observedAt = now;
  }

  /** Gives the lease up so a standby can take over without waiting for it to expire. */
  private async release(): Promise<void> {
    if (!this.lease) return;
    try {
      const current = await this.client.get<Lease>(
        RESOURCES.lease,
        this.options.leaseNamespace,
        this.options.leaseName,
      );
      if (!current || current.spec?.holderIdentity !== this.options.identity) return;
      await this.client.replace<Lease>(RESOURCES.lease, {
        ...current,
        spec: {
          ...current.spec,
          holderIdentity: "",
          leaseDurationSeconds: 1,
          renewTime: microTime(Date.now()),
        },
      });
      this.options.log.info({ lease: this.options.leaseName }, "released the lease");
    } catch (error) {
      this.options.log.warn({ err: errorMessage(error) }, "could not release the lease");
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
