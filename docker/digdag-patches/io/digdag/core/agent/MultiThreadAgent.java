// Digdag 0.10.5.1's io.digdag.core.agent.MultiThreadAgent (Apache License 2.0, Copyright Treasure
// Data, Inc.; see the runtime's LICENSE and NOTICE), modified by digdag-ha: the agent takes the next
// tasks as soon as one of its threads is free, and waits a settable time for tasks queued by another
// process. Changes from the original are marked "digdag-ha".
//
// Why: as released, an agent whose threads are all busy sleeps 500 ms before it looks again — no
// finishing task wakes it — and an agent that found nothing sleeps up to 1 s unless a task is queued
// in its own JVM. On one `server -m` that costs little (its loop and its only agent share a JVM); with
// several worker processes, tasks one worker's loop queues wait for the others' next round. Here a
// finishing task releases a permit the full agent waits on, and the empty-round wait is the
// environment's DIGDAG_HA_AGENT_POLL_MILLIS (unset: 1000 ms as released; digdag-ha sets it from
// AGENT_POLL_MILLIS).
package io.digdag.core.agent;

import com.google.common.base.Optional;
import com.google.common.util.concurrent.ThreadFactoryBuilder;
import io.digdag.core.ErrorReporter;
import io.digdag.core.database.TransactionManager;
import io.digdag.core.log.LogMarkers;
import io.digdag.spi.TaskRequest;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import io.digdag.spi.metrics.DigdagMetrics;
import static io.digdag.spi.metrics.DigdagMetrics.Category;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

public class MultiThreadAgent
        implements Runnable
{
    private static final Logger logger = LoggerFactory.getLogger(MultiThreadAgent.class);

    private final AgentConfig config;
    private final AgentId agentId;
    private final TaskServerApi taskServer;
    private final OperatorManager runner;
    private final TransactionManager transactionManager;
    private final ErrorReporter errorReporter;

    private final Object addActiveTaskLock = new Object();
    private final BlockingQueue<Runnable> executorQueue;
    private final ThreadPoolExecutor executor;
    private final AtomicInteger activeTaskCount = new AtomicInteger(0);
    // digdag-ha: a permit per finished task, so that a full agent looks for tasks once a thread is free.
    private final Semaphore taskFinished = new Semaphore(0);
    // digdag-ha: how long an empty round waits for a task queued in this JVM (released: 1000 ms).
    private static final long POLL_MILLIS = pollMillis(System.getenv("DIGDAG_HA_AGENT_POLL_MILLIS"));

    // digdag-ha
    static long pollMillis(String value)
    {
        if (value == null || value.trim().isEmpty()) {
            return 1000L;
        }
        try {
            return Math.max(10L, Long.parseLong(value.trim()));
        }
        catch (NumberFormatException ex) {
            logger.warn("DIGDAG_HA_AGENT_POLL_MILLIS={} is not a number of milliseconds; using 1000", value);
            return 1000L;
        }
    }
    private final DigdagMetrics metrics;

    private volatile boolean stop = false;

    public MultiThreadAgent(
            AgentConfig config, AgentId agentId,
            TaskServerApi taskServer, OperatorManager runner,
            TransactionManager transactionManager, ErrorReporter errorReporter, DigdagMetrics metrics)
    {
        this.agentId = agentId;
        this.config = config;
        this.taskServer = taskServer;
        this.runner = runner;
        this.transactionManager = transactionManager;
        this.errorReporter = errorReporter;
        this.metrics = metrics;

        ThreadFactory threadFactory = new ThreadFactoryBuilder()
            .setDaemon(false)  // make them non-daemon threads so that shutting down agent doesn't kill operator execution
            .setNameFormat("task-thread-%d")
            .build();

        if (config.getMaxThreads() > 0) {
            this.executorQueue = new LinkedBlockingQueue<Runnable>();
            this.executor = new ThreadPoolExecutor(
                    config.getMaxThreads(), config.getMaxThreads(),
                    0L, TimeUnit.SECONDS,
                    executorQueue, threadFactory);
        }
        else {
            // If there're no upper limit on number of threads, queue actually doesn't need to store entries.
            // Instead, executor.submit() blocks until a thread starts and takes it.
            // SynchronousQueue.size() always returns 0.
            this.executorQueue = new SynchronousQueue<Runnable>();
            this.executor = new ThreadPoolExecutor(
                    0, Integer.MAX_VALUE,
                    60L, TimeUnit.SECONDS,
                    executorQueue, threadFactory);
        }
    }

    public void shutdown(Optional<Duration> maximumCompletionWait)
        throws InterruptedException
    {
        stop = true;
        taskServer.interruptLocalWait();
        int maximumActiveTasks;
        synchronized (addActiveTaskLock) {
            // synchronize addActiveTaskLock not to reject task execution after acquiring them from taskServer
            executor.shutdown();  // Since here, no one can increase activeTaskCount.
            maximumActiveTasks = activeTaskCount.get();  /// Now get the maximum count.
            addActiveTaskLock.notifyAll();
        }
        taskFinished.release();  // digdag-ha: wake the agent thread if it waits for a free thread
        if (maximumActiveTasks > 0) {
            logger.info("Waiting for completion of {} running tasks...", maximumActiveTasks);
        }
        if (maximumCompletionWait.isPresent()) {
            long seconds = maximumCompletionWait.get().getSeconds();
            if (!executor.awaitTermination(seconds, TimeUnit.SECONDS)) {
                logger.warn("Some tasks didn't finish within maximum wait time ({} seconds)", seconds);
            }
        }
        else {
            // no maximum wait time. waits for ever
            while (!executor.awaitTermination(24, TimeUnit.HOURS))
                ;
        }
    }

    @Override
    public void run()
    {
        while (!stop) {
            try {
                boolean full = false;  // digdag-ha
                synchronized (addActiveTaskLock) {
                    if (executor.isShutdown()) {
                        break;
                    }
                    // Because addActiveTaskLock is locked, no one increases activeTaskCount in this synchronized block. Now get the maximum count.
                    int maximumActiveTasks = activeTaskCount.get();
                    // Because the maximum count doesn't increase, here can know that at least N number of threads are idling.
                    int guaranteedAvaialbleThreads = executor.getMaximumPoolSize() - maximumActiveTasks;
                    // Acquire at most guaranteedAvaialbleThreads or 10. This guarantees that all tasks start immediately.
                    int maxAcquire = Math.min(guaranteedAvaialbleThreads, 10);
                    if (maxAcquire > 0) {
                        metrics.summary(Category.AGENT,"mtag_NumMaxAcquire", maxAcquire);
                        transactionManager.begin(() -> {
                            List<TaskRequest> reqs = taskServer.lockSharedAgentTasks(maxAcquire, agentId, config.getLockRetentionTime(), POLL_MILLIS);  // digdag-ha: POLL_MILLIS
                            for (TaskRequest req : reqs) {
                                executor.submit(() -> {
                                    try {
                                        runner.run(req);
                                    }
                                    catch (Throwable t) {
                                        logger.error(
                                                LogMarkers.UNEXPECTED_SERVER_ERROR,
                                                "Uncaught exception. Task queue will detect this failure and this task will be retried later.", t);
                                        errorReporter.reportUncaughtError(t);
                                        metrics.increment(Category.AGENT, "uncaughtErrors");
                                    }
                                    finally {
                                        activeTaskCount.decrementAndGet();
                                        taskFinished.release();  // digdag-ha: a thread is free
                                    }
                                });
                                activeTaskCount.incrementAndGet();
                            }
                            return null;
                        });
                    }
                    else {
                        metrics.increment(Category.AGENT, "mtag_RunWaitCounter");
                        full = true;  // digdag-ha: wait below, outside the lock
                    }
                }
                if (full) {
                    // digdag-ha: no executor thread is available. Wait until a task execution finishes
                    // (a permit released after the count above was read returns at once), at most 500 ms
                    // as released; permits of earlier finishes are dropped.
                    if (taskFinished.tryAcquire(500, TimeUnit.MILLISECONDS)) {
                        taskFinished.drainPermits();
                    }
                }
            }
            catch (Throwable t) {
                logger.error(
                        LogMarkers.UNEXPECTED_SERVER_ERROR,
                        "Uncaught exception during acquiring tasks from a server. Ignoring. Agent thread will be retried.", t);
                errorReporter.reportUncaughtError(t);
                metrics.increment(Category.AGENT, "uncaughtErrors");
                try {
                    // sleep before retrying
                    Thread.sleep(1000);
                }
                catch (InterruptedException ex) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }
}
