// Starts @atproto/pds from its environment (PDS_*), as the project's own service entry point does.
'use strict'

const { PDS, envToCfg, envToSecrets, readEnv } = require('@atproto/pds')

const main = async () => {
  const env = readEnv()
  const pds = await PDS.create(envToCfg(env), envToSecrets(env))
  await pds.start()
  process.on('SIGTERM', async () => {
    await pds.destroy()
    process.exit(0)
  })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
