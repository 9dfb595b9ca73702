// Drives the official TypeScript Octopus client (@octopusdeploy/api-client) against a server for the calls the
// octopus-shared-workers package makes, and prints one JSON object describing what it saw (the pytest side asserts).
// Usage: OCTOPUS_URL=... OCTOPUS_API_KEY=... SPACE_NAME=... POOL_NAME=... node conformance.cjs
"use strict";
const { Client, SpaceRepository, SpaceScopedBasicRepository } = require("@octopusdeploy/api-client");
const { MachineScriptPolicyRunType } = require("@octopusdeploy/message-contracts/dist/machineScriptPolicyRunType");

// The contracts' enum, plus OnlyConnectivity, which Octopus.Client's ScriptPolicyRunType adds (newer servers).
const RUN_TYPES = new Set([...Object.values(MachineScriptPolicyRunType), "OnlyConnectivity"]);

async function allPages(repo, take, args = {}) {
  const items = [];
  const pages = [];
  for (let skip = 0; ; skip += take) {
    const page = await repo.list({ ...args, skip, take });
    pages.push({ skip, items: page.Items.length, total: page.TotalResults, perPage: page.ItemsPerPage });
    items.push(...page.Items);
    if (page.Items.length === 0 || items.length >= page.TotalResults) break;
  }
  return { items, pages };
}

async function main() {
  const env = process.env;
  const client = await Client.create({ instanceURL: env.OCTOPUS_URL, apiKey: env.OCTOPUS_API_KEY,
                                       userAgentApp: "octopus-shared-workers-conformance" });
  const out = { server: await client.getServerInformation() };

  const spaces = await allPages(new SpaceRepository(client), 2);
  out.spaces = spaces.items.map((s) => s.Name);
  out.spacePages = spaces.pages;

  const space = env.SPACE_NAME;
  const pools = new SpaceScopedBasicRepository(client, space, "~/api/{spaceId}/workerpools", "skip,take,ids,partialName");
  const policies = new SpaceScopedBasicRepository(client, space, "~/api/{spaceId}/machinepolicies", "skip,take,ids,partialName");
  const workers = new SpaceScopedBasicRepository(client, space, "~/api/{spaceId}/workers",
    "skip,take,name,ids,partialName,workerPoolIds,isDisabled,healthStatuses,commStyles,thumbprint");

  const poolList = (await allPages(pools, 1000)).items;
  out.pools = poolList.map((p) => p.Name);
  const pool = poolList.find((p) => p.Name === env.POOL_NAME);

  const policyList = (await allPages(policies, 1000)).items;
  out.policies = policyList.map((p) => ({
    name: p.Name, isDefault: p.IsDefault,
    runTypes: [p.MachineHealthCheckPolicy.PowerShellHealthCheckPolicy.RunType,
               p.MachineHealthCheckPolicy.BashHealthCheckPolicy.RunType],
  }));
  out.badRunTypes = out.policies.flatMap((p) => p.runTypes.filter((r) => !RUN_TYPES.has(r)));
  const policy = policyList.find((p) => p.IsDefault);

  const listed = await allPages(workers, 2, { workerPoolIds: pool.Id });
  out.workerPages = listed.pages;
  out.workers = listed.items.map((w) => w.Name);

  const created = await workers.create({
    Name: "conformance-1", IsDisabled: false, WorkerPoolIds: [pool.Id], MachinePolicyId: policy.Id,
    Endpoint: { CommunicationStyle: "TentacleActive", Uri: "poll://conformance0000000001/",
                Thumbprint: "C0FFEE00C0FFEE00C0FFEE00C0FFEE00C0FFEE00" },
  });
  out.created = { id: created.Id, name: created.Name, spaceId: created.SpaceId, uri: created.Endpoint.Uri };
  const fetched = await workers.get(created.Id);
  const modified = await workers.modify({ ...fetched, IsDisabled: true,
    Endpoint: { ...fetched.Endpoint, Uri: "poll://conformance0000000002/" } });
  out.modified = { isDisabled: modified.IsDisabled, uri: modified.Endpoint.Uri };
  await workers.del(modified);
  try {
    await workers.get(created.Id);
    out.afterDelete = "still there";
  } catch (err) {
    out.afterDelete = err.StatusCode || err.statusCode || String(err.message || err);
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  process.stderr.write(`conformance failed: ${err && (err.stack || err.message || JSON.stringify(err))}\n`);
  process.exit(1);
});
